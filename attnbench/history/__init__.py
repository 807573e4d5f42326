"""All runs in one embedded SQLite database (standard library), fed from a results root.

`import_runs(db, root)` is idempotent: a run already imported with the same state and
record count is left alone; a run that grew (it was still running) is re-imported.
`trend(db, ...)` gives, per case, its value in every run that has it, oldest first.
"""

from attnbench.history.store import HistoryStore, default_db_path

__all__ = ["HistoryStore", "default_db_path"]
