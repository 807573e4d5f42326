"""The SQLite history store: one row per run, one row per (run, case)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from attnbench.compare.environment import device_model
from attnbench.errors import UserError
from attnbench.results.store import RUN_FILE, load_run, utc_now

DB_NAME = "history.sqlite"
DB_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    suite TEXT,
    profile TEXT,
    started_at TEXT,
    ended_at TEXT,
    state TEXT,
    record_count INTEGER NOT NULL,
    ok_count INTEGER NOT NULL,
    device TEXT,
    torch TEXT,
    git_commit TEXT,
    hostname TEXT,
    imported_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL,
    label TEXT NOT NULL,
    kernel TEXT,
    cp_method TEXT,
    world_size INTEGER,
    mask TEXT,
    mask_label TEXT,
    seqlen INTEGER,
    dtype TEXT,
    pass TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    median_s REAL,
    p20_s REAL,
    p80_s REAL,
    repeats INTEGER,
    tflops REAL,
    peak_bytes INTEGER,
    key_json TEXT NOT NULL,
    PRIMARY KEY (run_id, case_id)
);
CREATE INDEX IF NOT EXISTS cases_by_case ON cases(case_id);
CREATE INDEX IF NOT EXISTS cases_by_kernel_mask ON cases(kernel, mask);
"""


def default_db_path(root: Path) -> Path:
    return Path(root) / DB_NAME


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class CaseTrend:
    case_id: str
    label: str
    points: list[dict[str, Any]]  # per run, oldest first: run_id, started_at, status, median_s, tflops, ...

    def measured(self) -> list[dict[str, Any]]:
        return [p for p in self.points if p["status"] == "ok" and p["median_s"]]

    @property
    def change(self) -> Optional[float]:
        """Last measured median over the first measured one, minus one (time: > 0 is slower)."""
        m = self.measured()
        if len(m) < 2:
            return None
        return m[-1]["median_s"] / m[0]["median_s"] - 1.0


class HistoryStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise UserError(f"--db {self.path}: folder {self.path.parent} does not exist")
        try:
            self.conn = sqlite3.connect(str(self.path))
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.executescript(SCHEMA)
            found = self.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not an attnbench history database ({exc})") from None
        if found is None:
            with self.conn:
                self.conn.execute("INSERT INTO meta VALUES ('version', ?)", (DB_VERSION,))
        elif found[0] != DB_VERSION:
            raise UserError(f"{self.path}: history version {found[0]}, this attnbench reads {DB_VERSION}; delete it to rebuild")
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- import ------------------------------------------------------------------------
    def import_root(self, root: Path) -> ImportReport:
        report = ImportReport()
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--root {root}: no such results folder")
        for run_dir in sorted(p for p in root.iterdir() if (p / RUN_FILE).exists()):
            self.import_run(run_dir, report)
        return report

    def import_run(self, run_dir: Path, report: Optional[ImportReport] = None) -> ImportReport:
        report = report or ImportReport()
        try:
            run = load_run(run_dir)
        except UserError as exc:
            report.problems.append(str(exc))
            return report
        info = run.info
        row = self.conn.execute("SELECT state, record_count FROM runs WHERE run_id = ?", (info.run_id,)).fetchone()
        if row is not None and row["state"] == info.state and row["record_count"] == len(run.records):
            report.unchanged.append(info.run_id)
            return report
        env = info.environment or {}
        devices = {r.case.device for r in run.records} or {"cpu"}
        device = device_model(env, "cuda" if any(d.startswith("cuda") for d in devices) else "cpu")
        with self.conn:
            self.conn.execute("DELETE FROM cases WHERE run_id = ?", (info.run_id,))
            self.conn.execute("DELETE FROM runs WHERE run_id = ?", (info.run_id,))
            self.conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.run_id, str(Path(run_dir).resolve()), info.suite.name, info.suite.profile, info.started_at,
                    info.ended_at, info.state, len(run.records), sum(1 for r in run.records if r.status.value == "ok"),
                    device, (env.get("torch") or {}).get("version"), (env.get("attnbench") or {}).get("git_commit"),
                    env.get("hostname"), utc_now(),
                ),
            )
            rows = {}
            for r in run.records:  # a case recorded twice: the last record wins (as in compare)
                t, c = r.timing, r.case
                rows[r.case_id] = (
                    info.run_id, r.case_id, c.label(), c.kernel, r.key.get("cp_method"), r.key.get("world_size"),
                    c.mask.name, c.mask.label(), c.shape.seqlen, c.dtype, c.pass_.value, r.status.value, r.reason,
                    t.median_s if t else None, t.p20_s if t else None, t.p80_s if t else None, t.repeats if t else None,
                    r.tflops, r.memory.peak_bytes if r.memory else None, json.dumps(r.key, sort_keys=True),
                )
            self.conn.executemany("INSERT INTO cases VALUES (" + ", ".join("?" * 20) + ")", rows.values())
        report.imported.append(info.run_id)
        return report

    # -- queries -------------------------------------------------------------------------
    def runs(self, limit: Optional[int] = None) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at, run_id").fetchall()
        out = [dict(r) for r in rows]
        return out[-limit:] if limit else out

    @staticmethod
    def _where(filters: dict[str, Iterable]) -> tuple[str, list]:
        clauses, params = [], []
        for column, values in filters.items():
            values = list(values or [])
            if values:
                clauses.append(f"c.{column} IN ({', '.join('?' * len(values))})")
                params += values
        return (" AND ".join(clauses) or "1"), params

    def trend(
        self,
        *,
        kernels: Optional[list[str]] = None,
        masks: Optional[list[str]] = None,
        seqlens: Optional[list[int]] = None,
        passes: Optional[list[str]] = None,
        case_ids: Optional[list[str]] = None,
    ) -> list[CaseTrend]:
        where, params = self._where(
            {"kernel": kernels, "mask": masks, "seqlen": seqlens, "pass": passes, "case_id": case_ids}
        )
        rows = self.conn.execute(
            "SELECT c.*, r.started_at FROM cases c JOIN runs r USING (run_id) "
            f"WHERE {where} ORDER BY r.started_at, r.run_id",
            params,
        ).fetchall()
        trends: dict[str, CaseTrend] = {}
        for row in rows:
            point = {k: row[k] for k in ("run_id", "started_at", "status", "reason", "median_s", "p20_s", "p80_s",
                                         "repeats", "tflops", "peak_bytes")}
            trend = trends.setdefault(row["case_id"], CaseTrend(row["case_id"], row["label"], []))
            trend.points.append(point)
        return list(trends.values())
