"""Tables of a run, like the paper's figures: one per (mask, pass), seqlen rows, kernel columns.

Cells hold TFLOPs/s with three significant figures (a CPU's 0.0771 is a number, not 0.00);
a case that did not produce a trustworthy number shows its status as a word (OOM,
unsupported, invalid, ...), never a sentinel number. Where the samples of a case are
spread wide (p80/p20 over :data:`WIDE_SPREAD`), the cell says by how much (``1.79 ±18%``).

Context-parallel records (``case.cp``) get their own tables: per (mask, pass) world-size
rows and method columns of per-GPU TFLOPs/s, then imbalance, communication and overlap
(exposed communication, share hidden behind compute) tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
                "mask_title": _mask_title(c.mask),
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
                **_cp_columns(r),
            }
        )
    return pd.DataFrame(rows)


def _mask_title(mask) -> str:
    """The mask label with spaces a table can wrap at: ``global_sliding_window (global_tokens=64, window=256)``."""
    if not mask.params:
        return mask.name
    return f"{mask.name} (" + ", ".join(f"{k}={v}" for k, v in sorted(mask.params.items())) + ")"


CP_COLUMNS = (
    "cp_method", "world_size", "scaling", "backend", "per_gpu_tflops", "time_imbalance", "area_imbalance",
    "comm_bytes", "comm_calls", "comm_expected_bytes", "comm_expected_calls", "comm_counted",
    "compute_ms", "communication_ms", "exposed_comm_ms", "overlap_efficiency",
)


def _cp_columns(r: Record) -> dict:
    """The CP columns of one record (all None for a kernel case)."""
    cp = r.case.cp
    out: dict = dict.fromkeys(CP_COLUMNS)
    if cp is None:
        return out
    method = cp.method + ("(" + ",".join(f"{k}={v}" for k, v in sorted(cp.params.items())) + ")" if cp.params else "")
    out.update(cp_method=method, world_size=cp.world_size, scaling=cp.scaling)
    res = r.cp
    if res is None:
        return out
    counted = _pass_counts(res.comm, r.case.pass_.value)
    expected = _pass_counts({k: [v] for k, v in res.comm_expected.items()}, r.case.pass_.value)
    out.update(
        backend=res.backend,
        per_gpu_tflops=res.per_gpu_tflops if res.per_gpu_tflops is not None else r.tflops,
        time_imbalance=res.imbalance,
        area_imbalance=res.area_imbalance,
        comm_bytes=max((b for b, _ in counted), default=None),
        comm_calls=max((c for _, c in counted), default=None),
        comm_expected_bytes=expected[0][0] if expected else None,
        comm_expected_calls=expected[0][1] if expected else None,
        comm_counted=res.comm_counted,
    )
    if res.overlap is not None:
        o = res.overlap
        out.update(compute_ms=o.compute_s * 1e3, communication_ms=o.communication_s * 1e3,
                   exposed_comm_ms=o.exposed_s * 1e3, overlap_efficiency=o.efficiency)
    return out


def _pass_counts(comm: dict, pass_name: str) -> list[tuple[int, int]]:
    """Per rank (bytes, calls) of `pass_name`; forward_backward without its own entry sums both."""
    if pass_name in comm:
        return [(c.bytes_sent, c.calls) for c in comm[pass_name]]
    parts = [comm[p] for p in ("forward", "backward") if p in comm] if pass_name == "forward_backward" else []
    if not parts:
        return []
    return [(sum(c.bytes_sent for c in cs), sum(c.calls for c in cs)) for cs in zip(*parts)]


def _kernel_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["cp_method"].isna()] if "cp_method" in frame.columns else frame


def _cp_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["cp_method"].notna()] if "cp_method" in frame.columns else frame.iloc[0:0]


#: p80/p20 - 1 above which a cell shows the spread of its samples
WIDE_SPREAD = 0.2
SPREAD_NOTE = (f"±N%: half the p20-p80 range of the samples, relative to the median; shown where "
               f"p80/p20 exceeds {1 + WIDE_SPREAD:g} (a noisy measurement)")


def significant(value: float, digits: int = 3) -> str:
    """`value` with `digits` significant figures in plain notation: 1.79, 0.0771, 245, 12345."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    return f"{value:.{max(0, digits - 1 - magnitude)}f}"


def spread_suffix(median: float | None, p20: float | None, p80: float | None) -> str:
    """`` ±N%`` where the samples are spread wide (see :data:`WIDE_SPREAD`), else ``""``."""
    if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in (median, p20, p80)):
        return ""
    if p80 / p20 - 1.0 <= WIDE_SPREAD:
        return ""
    return f" ±{(p80 - p20) / (2 * median):.0%}"


def cell(status: str, value: float | None) -> str:
    state = Status(status)
    if state is Status.ok and value is not None and value == value:
        return significant(float(value))
    if state is Status.ok:
        return "n/a"
    return STATUS_WORDS[state]


@dataclass
class Table:
    title: str
    frame: pd.DataFrame  # string cells, index = row label
    notes: list[str] = field(default_factory=list)  # printed under the table (legends)


def never_run(frame: pd.DataFrame) -> dict[str, str]:
    """Kernels with no attempted case at all (kernel -> the first reason), left out of the tables."""
    if frame.empty:  # a run with no record yet (killed in its first case, or nothing left to resume)
        return {}
    out = {}
    for kernel, group in _kernel_rows(frame).groupby("kernel", sort=False):
        if set(group["status"]) <= {"unsupported"}:
            out[kernel] = str(group["reason"].iloc[0])
    return out


def _group_title(keys: dict) -> str:
    return " | ".join(f"{v}" if k in ("mask", "pass") else f"{k}={v}" for k, v in keys.items())


def performance_tables(frame: pd.DataFrame) -> list[Table]:
    """TFLOPs/s per (mask, pass [, dtype, shape where they vary]): seqlen x kernel."""
    if frame.empty:
        return []
    frame = _kernel_rows(frame)
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
        spread = False
        for _, row in group.iterrows():
            text = cell(row["status"], row["tflops"])
            if row["status"] == "ok":
                suffix = spread_suffix(row["median_ms"], row["p20_ms"], row["p80_ms"])
                text, spread = text + suffix, spread or bool(suffix)
            grid.setdefault(row["seqlen"], {})[row["kernel"]] = text
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=[k for k in kernels if k in set(group["kernel"])])
        table.index.name = "seqlen"
        tables.append(Table(f"TFLOPs/s: {_group_title(keys)}", table.sort_index().fillna(""), [SPREAD_NOTE] if spread else []))
    return tables


def byte_size(n: float) -> str:
    """Bytes in a binary unit with three significant figures: 0, 512 B, 4.00 KiB, 2.88 MiB, 1.25 GiB."""
    if n == 0:
        return "0"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{significant(n / scale)} {unit}"
    return f"{n:.0f} B"


def memory_tables(frame: pd.DataFrame) -> list[Table]:
    """Peak memory per pass: (mask, seqlen) rows x kernel columns. The mask and the length are
    two columns, so a long mask label wraps inside its own cell, never into a false row."""
    if frame.empty:
        return []
    frame = _kernel_rows(frame)
    frame = frame[~frame["kernel"].isin(never_run(frame))]
    if frame.empty:
        return []
    kernels = list(dict.fromkeys(frame["kernel"]))
    tables = []
    for pass_name, group in frame.groupby("pass", sort=False):
        grid = {}
        for _, row in group.iterrows():
            value = row["peak_mib"] if row["status"] in ("ok", "invalid") else None
            text = byte_size(value * 2**20) if value is not None and value == value else cell(row["status"], None)
            if row["status"] == "invalid" and value is not None:
                text += " (invalid)"
            grid.setdefault((row["mask_title"], row["seqlen"]), {})[row["kernel"]] = text
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=kernels).fillna("")
        table.insert(0, "S", [str(s) for _, s in table.index])
        table.index = [m for m, _ in table.index]
        table.index.name = "mask"
        method = ", ".join(sorted(set(group["memory_method"].dropna()))) or "n/a"
        tables.append(Table(f"Peak memory ({method}): {pass_name}", table))
    return tables


# -- context parallelism ----------------------------------------------------------------------
def cp_never_run(frame: pd.DataFrame) -> dict[str, str]:
    """CP methods with no attempted case at all (method -> the first reason), left out of the tables."""
    if frame.empty:
        return {}
    out = {}
    for method, group in _cp_rows(frame).groupby("cp_method", sort=False):
        if set(group["status"]) <= {"unsupported"}:
            out[str(method)] = str(group["reason"].iloc[0])
    return out


def _cp_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = _cp_rows(frame)
    return frame[~frame["cp_method"].isin(cp_never_run(frame))]


def _cp_varying(frame: pd.DataFrame) -> list[str]:
    cols = [c for c in ("kernel", "dtype", "heads_q", "heads_kv", "head_dim", "batch") if frame[c].nunique() > 1]
    strong = frame[frame["scaling"] == "strong"]
    if not strong.empty and strong["seqlen"].nunique() > 1:
        cols.append("seqlen")  # strong scaling: one table per global length
    return cols


def _world_label(group: pd.DataFrame, world: int) -> str:
    lengths = sorted(set(group[group["world_size"] == world]["seqlen"]))
    return f"{world} (S={', '.join(map(str, lengths))})"


def cp_performance_tables(frame: pd.DataFrame) -> list[Table]:
    """Per-GPU TFLOPs/s per (mask, pass [, kernel, dtype, shape where they vary]): world size x method."""
    frame = _cp_frame(frame)
    if frame.empty:
        return []
    methods = list(dict.fromkeys(frame["cp_method"]))
    group_cols = ["mask", "pass", *_cp_varying(frame)]
    tables = []
    for keys, group in frame.groupby(group_cols, sort=False):
        keys = dict(zip(group_cols, keys if isinstance(keys, tuple) else (keys,)))
        grid: dict = {}
        for _, row in group.iterrows():
            rate = row["per_gpu_tflops"]
            rate = None if rate is None or rate != rate else float(rate)
            text = cell(row["status"], rate)
            grid.setdefault(int(row["world_size"]), {})[row["cp_method"]] = text
        present = set(group["cp_method"])
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=[m for m in methods if m in present])
        table = table.sort_index().fillna("")
        table.index = [_world_label(group, w) for w in table.index]
        table.index.name = "world size"
        scaling = ", ".join(sorted(set(group["scaling"].dropna())))
        tables.append(Table(f"CP per-GPU TFLOPs/s ({scaling} scaling): {_group_title(keys)}", table))
    return tables


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def _balance_cell(row) -> str:
    if row["time_imbalance"] is None or row["time_imbalance"] != row["time_imbalance"]:
        return cell(row["status"], None) if row["status"] != "ok" else "n/a"
    text = f"{row['time_imbalance']:.2f} / {row['area_imbalance']:.2f}"
    return text if row["status"] == "ok" else f"{text} ({STATUS_WORDS[Status(row['status'])]})"


def _missing(x) -> bool:
    return x is None or x != x


def _comm_cell(row) -> str:
    b, c = row["comm_bytes"], row["comm_calls"]
    if row["status"] == "ok" and row["comm_counted"] is False:
        return "not counted (the method's own collectives)"
    if b is None or b != b:
        return cell(row["status"], None) if row["status"] != "ok" else "n/a"
    text = f"{_mib(b)}, {int(c)} calls"
    eb, ec = row["comm_expected_bytes"], row["comm_expected_calls"]
    if eb is None or eb != eb:
        return text + " (no expectation)"
    if int(eb) == int(b) and int(ec) == int(c):
        return text + " (= expected)"
    return text + f" (expected {_mib(eb)}, {int(ec)} calls)"


def _cp_grid_tables(frame: pd.DataFrame, title: str, fill) -> list[Table]:
    frame = _cp_frame(frame)
    if frame.empty:
        return []
    methods = list(dict.fromkeys(frame["cp_method"]))
    group_cols = ["pass", *_cp_varying(frame)]
    tables = []
    for keys, group in frame.groupby(group_cols, sort=False):
        keys = dict(zip(group_cols, keys if isinstance(keys, tuple) else (keys,)))
        grid: dict = {}
        for _, row in group.iterrows():
            grid.setdefault((row["mask"], int(row["world_size"])), {})[row["cp_method"]] = fill(row)
        present = set(group["cp_method"])
        table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=[m for m in methods if m in present]).fillna("")
        table.index = [f"{m} W={w}" for m, w in table.index]
        table.index.name = "mask, world size"
        tables.append(Table(f"{title}: {_group_title(keys)}", table))
    return tables


def cp_balance_tables(frame: pd.DataFrame) -> list[Table]:
    """Per pass: (mask, world size) x method, cells "time imbalance / area imbalance" (max / mean)."""
    return _cp_grid_tables(frame, "CP imbalance, time / area (max / mean over ranks)", _balance_cell)


def cp_comm_tables(frame: pd.DataFrame) -> list[Table]:
    """Per pass: (mask, world size) x method, cells: bytes sent and calls per rank (the largest
    rank), counted around the collectives, against the method's analytic expectation."""
    return _cp_grid_tables(frame, "CP communication per rank (largest rank; counted vs analytic)", _comm_cell)


def _overlap_cell(row) -> str:
    exposed, share = row["exposed_comm_ms"], row["overlap_efficiency"]
    if _missing(exposed):
        return cell(row["status"], None) if row["status"] != "ok" else "n/a"
    hidden = "nothing to hide" if _missing(share) else f"{share:.0%} hidden"
    text = f"{exposed:.3g} ms exposed, {hidden}"
    return text if row["status"] == "ok" else f"{text} ({STATUS_WORDS[Status(row['status'])]})"


def cp_overlap_tables(frame: pd.DataFrame) -> list[Table]:
    """Per pass: (mask, world size) x method, cells: exposed communication (total - compute
    only) and the share of the communication-only time hidden behind compute."""
    return _cp_grid_tables(frame, "CP overlap: communication exposed (total - compute only), share hidden", _overlap_cell)


def cp_tables(frame: pd.DataFrame) -> list[Table]:
    return cp_performance_tables(frame) + cp_balance_tables(frame) + cp_comm_tables(frame) + cp_overlap_tables(frame)


def to_markdown(table: Table, explained: set[str] | None = None) -> str:
    """`table` as markdown; its notes only where not in `explained` (which is updated)."""
    frame = table.frame
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [str(v) for v in row.tolist()]) + " |")
    notes = [note for note in table.notes if explained is None or note not in explained]
    if explained is not None:
        explained.update(notes)
    lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"


def write_tables(run_dir: Path) -> None:
    """summary.csv (one row per case) and tables.md (the tables) beside the records."""
    run = load_run(run_dir)
    frame = records_frame(run.records)
    frame.to_csv(Path(run_dir) / "summary.csv", index=False)
    parts = [f"# attnbench run {run.info.run_id}: {run.info.suite.name}\n"]
    explained: set[str] = set()
    parts += [to_markdown(t, explained) for t in performance_tables(frame) + memory_tables(frame)]
    parts += [f"- `{kernel}` not run: {reason}" for kernel, reason in never_run(frame).items()]
    parts += [to_markdown(t) for t in cp_tables(frame)]
    parts += [f"- CP method `{method}` not run: {reason}" for method, reason in cp_never_run(frame).items()]
    (Path(run_dir) / "tables.md").write_text("\n".join(parts), encoding="utf-8")
