"""Run directories: `results/<run-id>/run.json`, `records.jsonl` and `visits.jsonl`.

Records are appended one line per finished case and flushed to disk at once (hyperfine
style), so a killed run keeps every finished case. run.json is replaced atomically.
A torn last line (a process killed mid-write) is skipped by the reader and reported.
With rounds (runner.rounds) every visit of a case is appended to `visits.jsonl` the same
way as it ends: the journal a resume takes unfinished cases' rounds back from.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from attnbench.errors import UserError
from attnbench.results.schema import SCHEMA_VERSION, Record, RunInfo

RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
VISITS_FILE = "visits.jsonl"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable and unique even for runs started in the same second."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def write_json_atomic(path: Path, payload: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunWriter:
    """Owns one run directory while the run is going."""

    def __init__(self, root: Path, info: RunInfo, *, resume: bool = False) -> None:
        self.dir = Path(root) / info.run_id
        try:
            self.dir.mkdir(parents=True, exist_ok=resume)
        except OSError as exc:  # a file in the way, a read-only place: the user's path, not a crash
            raise UserError(f"results root {root}: cannot create the run folder there ({exc.strerror or exc}); "
                            "give a folder that can be written") from None
        self.info = info
        if resume:
            drop_torn_tail(self.dir / RECORDS_FILE)
            drop_torn_tail(self.dir / VISITS_FILE)
        self._records = open(self.dir / RECORDS_FILE, "a", encoding="utf-8")
        self._visits = open(self.dir / VISITS_FILE, "a", encoding="utf-8")
        self.write_info()

    @classmethod
    def resume(cls, run: "LoadedRun", reopen: set[str] = frozenset()) -> "RunWriter":
        """Continue `run` in place: new records are appended after the finished ones. The
        records of the cases in `reopen` (cut short between rounds) are taken out first:
        their remaining rounds are run and their whole record written again."""
        if reopen:
            kept = [r for r in run.records if r.case_id not in reopen]
            write_json_atomic(run.path / RECORDS_FILE, "".join(r.to_json_line() + "\n" for r in kept))
            run = LoadedRun(run.path, run.info, kept, run.warnings, run.visits)
        info = run.info.model_copy(deep=True)
        info.state, info.ended_at = "running", None
        info.resumed_at = [*info.resumed_at, utc_now()]
        info.status_counts = {}
        for record in run.records:
            info.status_counts[record.status.value] = info.status_counts.get(record.status.value, 0) + 1
        return cls(run.path.parent, info, resume=True)

    def note(self, text: str) -> None:
        """Something that happened to the run itself (worker restarts), kept in run.json."""
        self.info.notes.append(text)
        self.write_info()

    def write_info(self) -> None:
        write_json_atomic(self.dir / RUN_FILE, self.info.model_dump_json(indent=2))

    def append(self, record: Record) -> None:
        _append_line(self._records, record)
        self.info.status_counts[record.status.value] = self.info.status_counts.get(record.status.value, 0) + 1

    def append_visit(self, record: Record) -> None:
        """One visit of a case (runner.rounds), journalled as soon as it ends."""
        _append_line(self._visits, record)

    def finish(self, state: str) -> None:
        self.info.state = state
        self.info.ended_at = utc_now()
        self.write_info()
        self._records.close()
        self._visits.close()


def _append_line(handle, record: Record) -> None:
    handle.write(record.to_json_line() + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed process left unfinished, so appending starts clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


@dataclass
class LoadedRun:
    path: Path
    info: RunInfo
    records: list[Record]
    warnings: list[str] = field(default_factory=list)
    #: the visits journal (runner.rounds), read only by `load_run(..., visits=True)`
    visits: list[Record] = field(default_factory=list)


def _check_version(found: object, where: Path) -> None:
    if found != SCHEMA_VERSION:
        raise UserError(
            f"{where}: schema version {found} is not supported by this attnbench (reads version {SCHEMA_VERSION}); "
            "use the attnbench version that wrote it"
        )


def read_records(path: Path) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    warnings: list[str] = []
    if not path.exists():
        return records, warnings
    lines = path.read_text(encoding="utf-8").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            if number - 1 == last:
                warnings.append(f"{path}:{number}: torn last line skipped (the run was killed while writing it)")
                continue
            raise UserError(f"{path}:{number}: not a JSON record; the file is damaged") from None
        _check_version(raw.get("schema_version"), path)
        try:
            records.append(Record.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{path}:{number}: invalid record at {loc}: {first['msg']}") from None
    return records, warnings


def load_run(run_dir: Path, *, visits: bool = False) -> LoadedRun:
    """A run directory's info and records; with `visits`, its visits journal too. Cases that
    have visits in the journal but no record (a run killed between rounds) are counted in a
    warning: `--resume` finishes them."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_FILE
    if not info_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    try:
        raw = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{info_path}: not valid JSON ({exc.msg})") from None
    _check_version(raw.get("schema_version"), info_path)
    try:
        info = RunInfo.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{info_path}: invalid at {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    records, warnings = read_records(run_dir / RECORDS_FILE)
    journal, journal_warnings = read_records(run_dir / VISITS_FILE) if visits else ([], [])
    journalled = {v.case_id for v in journal} if visits else _journalled_ids(run_dir / VISITS_FILE)
    unrecorded = journalled - {r.case_id for r in records}
    if unrecorded:
        warnings.append(f"{len(unrecorded)} case(s) have rounds in {VISITS_FILE} but no record (the run was stopped "
                        "between rounds without writing them): resume the run to finish them")
    if visits:
        warnings += journal_warnings
    return LoadedRun(run_dir, info, records, warnings, journal if visits else [])


def _journalled_ids(path: Path) -> set[str]:
    """The case ids in a visits journal, without reading the records whole."""
    ids: set[str] = set()
    if not path.exists():
        return ids
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["case_id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn line: the full read (resume) reports it
    return ids


def resolve_run(ref: str, root: Path) -> Path:
    """A run directory, a run id under `root`, `latest` or `latest~N`."""
    candidate = Path(ref)
    if (candidate / RUN_FILE).exists():
        return candidate
    root = Path(root)
    runs = sorted(p.name for p in root.iterdir() if (p / RUN_FILE).exists()) if root.is_dir() else []
    if ref == "latest" or ref.startswith("latest~"):
        back = 0
        if ref != "latest":
            try:
                back = int(ref.split("~", 1)[1])
            except ValueError:
                back = -1
            if back < 0:
                raise UserError(f"bad run reference {ref!r}; use latest or latest~N (N = 0, 1, 2, ...)") from None
        if back >= len(runs):
            raise UserError(f"{ref}: only {len(runs)} run(s) under {root}")
        return root / runs[-1 - back]
    if (root / ref / RUN_FILE).exists():
        return root / ref
    matches = [r for r in runs if r.startswith(ref)]
    if len(matches) == 1:
        return root / matches[0]
    raise UserError(f"no run {ref!r} under {root} (give a run directory, a run id, latest or latest~N)")
