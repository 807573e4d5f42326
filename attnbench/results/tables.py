"""Tables of a run, like the paper's figures: one per (mask, pass), seqlen rows, kernel columns.

Cells hold TFLOPs/s; a case that did not produce a trustworthy number shows its status
as a word (OOM, unsupported, invalid, ...), never a sentinel number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnbench.results.schema import Record, Status
from attnbench.results.store import load_run

STATUS_WORDS = {
    Status.unsupported: "unsupported",
    Status.skipped: "skipped",
    Status.oom: "OOM",
    Status.timeout: "timeout",
    Status.error: "error",
    Status.invalid: "invalid",
}


def records_frame(records: list[Record]) -> pd.DataFrame:
    """One flat row per record (also written as summary.csv)."""
    rows = []
    for r in records:
        c = r.case
        worst = None
        if r.accuracy is not None:
            errs = [t.rel_l2 for t in r.accuracy.tensors.values() if t.rel_l2 is not None]
            worst = max(errs) if errs else None
        rows.append(
            {
                "kernel": c.kernel,
                "mask": c.mask.label(),
                "seqlen": c.shape.seqlen,
                "batch": c.shape.batch,
                "heads_q": c.shape.heads_q,
                "heads_kv": c.shape.heads_kv,
                "head_dim": c.shape.head_dim,
                "dtype": c.dtype,
                "pass": c.pass_.value,
                "status": r.status.value,
                "reason": r.reason,
                "tflops": r.tflops,
                "median_ms": r.timing.median_s * 1e3 if r.timing else None,
                "p20_ms": r.timing.p20_s * 1e3 if r.timing else None,
                "p80_ms": r.timing.p80_s * 1e3 if r.timing else None,
                "repeats": r.timing.repeats if r.timing else None,
                "peak_mib": r.memory.peak_bytes / 2**20 if r.memory and r.memory.peak_bytes is not None else None,
                "memory_method": r.memory.method if r.memory else None,
                "max_rel_l2": worst,
                "area": r.mask.get("area") if r.mask else None,
                "flops": r.flops,
                "case_id": r.case_id,
            }
        )
    return pd.DataFrame(rows)


def cell(status: str, value: float | None, digits: int = 2) -> str:
    state = Status(status)
    if state is Status.ok and value is not None:
        return f"{value:.{digits}f}"
    if state is Status.ok:
        return "n/a"
    return STATUS_WORDS[state]


@dataclass
class Table:
    title: str
    frame: pd.DataFrame  # string cells, index = row label


def never_run(frame: pd.DataFrame) -> dict[str, str]:
    """Kernels with no attempted case at all (kernel -> the first reason), left out of the tables."""
    out = {}
    for kernel, group in frame.groupby("kernel", sort=False):
        if set(group["status"]) <= {"unsupported"}:
            out[kernel] = str(group["reason"].iloc[0])
    return out


def _group_title(keys: dict) -> str:
    return " | ".join(f"{v}" if k in ("mask", "pass") else f"{k}={v}" for k, v in keys.items())


def performance_tables(frame: pd.DataFrame) -> list[Table]:
    """TFLOPs/s per (mask, pass [, dtype, shape where they vary]): seqlen x kernel."""
    frame = frame[~frame["kernel"].isin(never_run(frame))]
    if frame.empty:
        return []
    kernels = list(dict.fromkeys(frame["kernel"]))
    varying = [c for c in ("dtype", "heads_q", "heads_kv", "head_dim", "batch") if frame[c].nunique() > 1]
    group_cols = ["mask", "pass", *varying]
    tables = []
    for keys, group in frame.groupby(group_cols, sort=False):
        keys = dict(zip(group_cols, keys if isinstance(keys, tuple) else (keys,)))
        grid = {}
        for _, row in group.iterrows():
            grid.setdefault(row["seqlen"], {})[row["kernel"]] = cell(row["status"], row["tflops"])
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=[k for k in kernels if k in set(group["kernel"])])
        table.index.name = "seqlen"
        tables.append(Table(f"TFLOPs/s: {_group_title(keys)}", table.sort_index().fillna("")))
    return tables


def memory_tables(frame: pd.DataFrame) -> list[Table]:
    """Peak memory (MiB) per pass: (mask, seqlen) x kernel."""
    frame = frame[~frame["kernel"].isin(never_run(frame))]
    if frame.empty:
        return []
    kernels = list(dict.fromkeys(frame["kernel"]))
    tables = []
    for pass_name, group in frame.groupby("pass", sort=False):
        grid = {}
        for _, row in group.iterrows():
            value = row["peak_mib"] if row["status"] in ("ok", "invalid") else None
            text = cell("ok", value, 1) if value is not None and value == value else cell(row["status"], None)
            if row["status"] == "invalid" and value is not None:
                text += " (invalid)"
            grid.setdefault((row["mask"], row["seqlen"]), {})[row["kernel"]] = text
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=kernels).fillna("")
        table.index = [f"{m} S={s}" for m, s in table.index]
        method = ", ".join(sorted(set(group["memory_method"].dropna()))) or "n/a"
        tables.append(Table(f"Peak memory MiB ({method}): {pass_name}", table))
    return tables


def to_markdown(table: Table) -> str:
    frame = table.frame
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(run_dir: Path) -> None:
    """summary.csv (one row per case) and tables.md (the tables) beside the records."""
    run = load_run(run_dir)
    frame = records_frame(run.records)
    frame.to_csv(Path(run_dir) / "summary.csv", index=False)
    parts = [f"# attnbench run {run.info.run_id}: {run.info.suite.name}\n"]
    parts += [to_markdown(t) for t in performance_tables(frame) + memory_tables(frame)]
    parts += [f"- `{kernel}` not run: {reason}" for kernel, reason in never_run(frame).items()]
    (Path(run_dir) / "tables.md").write_text("\n".join(parts), encoding="utf-8")
