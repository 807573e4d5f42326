"""Screens of the regression commands: compare, history, report, masks show."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from attnbench.errors import UserError

FORMATS = ("table", "markdown", "json")


@dataclass(frozen=True)
class CompareOptions:
    threshold: float
    fail_on: str
    fmt: str
    allow_env_change: bool
    canary_threshold: float
    normalise_drift: bool
    confirm_rounds: Optional[int] = None  # None: no --confirm
    base_code: object = None  # runner.confirm.BaseCode: the base's code path measured side by side
    cpu_time: bool = True  # one-thread CPU cases on thread CPU time (compare.core CPU_TIME)


def base_code_of(confirm: bool, source: Optional[Path], env: Optional[list[str]]):
    """--base-source / --base-env as a runner.confirm.BaseCode (None when neither is given)."""
    if source is None and not env:
        return None
    if not confirm:
        raise UserError("--base-source and --base-env only apply with --confirm")
    from attnbench.runner.confirm import BaseCode

    if source is not None and not (Path(source) / "attnbench" / "__init__.py").is_file():
        raise UserError(f"--base-source {source}: no attnbench package there (give the root of a checkout)")
    variables: dict[str, Optional[str]] = {}
    for item in env or []:
        name, eq, value = item.partition("=")
        if not name or not name.replace("_", "").isalnum():
            raise UserError(f"--base-env {item!r}: use NAME=VALUE, or NAME to unset it")
        variables[name] = value if eq else None
    return BaseCode(str(Path(source).resolve()) if source is not None else None, variables)


def compare_screen(console: Console, base: str, current: str, root: Path, options: CompareOptions) -> int:
    from attnbench.compare import FAIL_ON, compare_runs, nothing_to_compare
    from attnbench.compare.render import print_comparison, to_json, to_markdown
    from attnbench.results.store import load_run, resolve_run

    fmt, fail_on, threshold = options.fmt, options.fail_on, options.threshold
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fail_on not in FAIL_ON:
        raise UserError(f"--fail-on {fail_on!r}: use one of {', '.join(FAIL_ON)}")
    if not (isinstance(threshold, float) and math.isfinite(threshold) and 0 < threshold < 10):
        raise UserError(f"--threshold {threshold}: use a fraction such as 0.05 (5%)")
    if not (math.isfinite(options.canary_threshold) and 0 < options.canary_threshold < 10):
        raise UserError(f"--canary-threshold {options.canary_threshold}: use a fraction such as 0.25 (25%)")
    base_run = load_run(resolve_run(base, root))
    current_run = load_run(resolve_run(current, root))
    problem = nothing_to_compare(base_run, current_run)
    if problem:
        raise UserError(problem)
    cmp = compare_runs(base_run, current_run, threshold=threshold, allow_env_change=options.allow_env_change,
                       canary_threshold=options.canary_threshold, normalise_drift=options.normalise_drift,
                       cpu_time=options.cpu_time)
    if options.confirm_rounds is not None:
        _confirm(console, cmp, base_run, current_run, options.confirm_rounds, options.base_code, quiet=fmt == "json")
    if fmt == "json":
        console.file.write(to_json(cmp, fail_on) + "\n")
    elif fmt == "markdown":
        console.file.write(to_markdown(cmp))
    else:
        print_comparison(console, cmp)
    return cmp.exit_code(fail_on)


def _confirm(console: Console, cmp, base_run, current_run, rounds: int, base_code, *, quiet: bool) -> None:
    """--confirm: the flagged cases measured again (runner.confirm), a line per visit on stderr."""
    import sys

    from attnbench.runner.confirm import confirm, flagged_cases
    from attnbench.runner.run import RunEvents, RunInterrupted

    log = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    count = len(flagged_cases(cmp, current_run))
    if count:
        log.print(Text(f"--confirm: measuring {count} flagged case(s) again, {rounds} rounds each"))

    def on_visit(index, visit, record):
        log.print(Text(f"  round {visit.round + 1}/{visit.rounds} {record.status.value} {record.case.label()}"))

    try:
        confirm(cmp, base_run, current_run, rounds=rounds, events=None if quiet else RunEvents(on_visit=on_visit),
                base_code=base_code)
    except RunInterrupted as stop:
        raise UserError(f"--confirm interrupted; nothing changed in the comparison (partial run: {stop.run_dir})") from None


def history_screen(console: Console, root: Path, db: Optional[Path], kernels, masks, seqlens, passes,
                   last: int, as_json: bool) -> None:
    from attnbench.history import HistoryStore, default_db_path
    from attnbench.suite import parse_seqlen

    if last < 1:
        raise UserError("--last must be >= 1")
    if not Path(root).is_dir():
        raise UserError(f"--root {root}: no such results folder (runs are written there by `attnbench run`)")
    lengths = [parse_seqlen(s) for s in seqlens] if seqlens else None
    with HistoryStore(db or default_db_path(root)) as store:
        report = store.import_root(root)
        runs = store.runs()
        trends = store.trend(kernels=kernels, masks=masks, seqlens=lengths, passes=passes)
        if as_json:
            payload = {
                "db": str(store.path),
                "imported": report.imported,
                "problems": report.problems,
                "runs": runs,
                "cases": [{"case_id": t.case_id, "label": t.label, "change": t.change, "points": t.points} for t in trends],
            }
            console.file.write(json.dumps(payload, indent=2, default=str) + "\n")
            return
        console.print(Text(f"history {store.path}: {len(report.imported)} run(s) imported, "
                           f"{len(report.unchanged)} already there"))
        for problem in report.problems:
            console.print(Text.assemble(("skipped: ", "yellow"), problem))
        table = RichTable(title="Runs", title_justify="left", header_style="bold")
        for col in ("run", "started", "suite", "profile", "state", "records", "ok", "device", "torch", "commit"):
            table.add_column(col)
        for r in runs:
            table.add_row(*(Text(str(x)) for x in (
                r["run_id"], r["started_at"], r["suite"], r["profile"] or "-", r["state"], r["record_count"],
                r["ok_count"], r["device"] or "-", r["torch"] or "-", (r["git_commit"] or "-")[:10])))
        console.print(table)
        if not trends:
            console.print("no case matches the filters")
            return
        shown = [r["run_id"] for r in runs][-last:]
        trend = RichTable(title=f"Trend: median time per run (last {len(shown)} runs, oldest first)",
                          title_justify="left", header_style="bold")
        trend.add_column("case")
        for i, run_id in enumerate(shown):
            trend.add_column(f"#{len(runs) - len(shown) + i + 1}\n{run_id}", justify="right")
        trend.add_column("last/first", justify="right")
        for t in trends:
            by_run = {p["run_id"]: p for p in t.points}
            cells = []
            for run_id in shown:
                p = by_run.get(run_id)
                if p is None:
                    cells.append("")
                elif p["status"] == "ok" and p["median_s"]:
                    cells.append(f"{p['median_s'] * 1e3:.4g} ms")
                else:
                    cells.append(p["status"])
            change = t.change
            trend.add_row(Text(t.label), *(Text(c) for c in cells),
                          Text("" if change is None else f"{change:+.1%}",
                               style="red" if change and change > 0.05 else ("green" if change and change < -0.05 else "")))
        console.print(trend)


def report_screen(console: Console, refs: list[str], out: Path, root: Path) -> None:
    from attnbench.report import write_report
    from attnbench.results.store import load_run, resolve_run

    if not refs:
        raise UserError("give at least one run")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: the report is HTML; name it *.html")
    runs = [load_run(resolve_run(ref, root)) for ref in refs]
    path = write_report(runs, out)
    console.print(Text(f"report of {len(runs)} run(s): {path} ({path.stat().st_size / 1024:.0f} KiB)"))


def mask_show_screen(console: Console, name: str, seqlen: str, params: dict, heads: int, head: int, blocks: int,
                     out: Path) -> None:
    from attnbench.masks import MASKS, build_mask
    from attnbench.report.figures import save_mask_picture
    from attnbench.suite import parse_seqlen

    if heads < 1:
        raise UserError("--heads must be >= 1")
    if not 0 <= head < heads:
        raise UserError(f"--head {head}: use 0..{heads - 1} (build more with --heads)")
    if blocks < 8:
        raise UserError("--blocks must be >= 8")
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--out {out}: use a .png, .svg or .pdf file name")
    if not out.parent.exists():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    family = MASKS.get(name)
    mask = build_mask(name, parse_seqlen(seqlen), params, heads=heads if family.dynamic else 1)
    block = save_mask_picture(mask, out, head=head if family.dynamic else 0, max_blocks=blocks)
    level = "exact" if block == 1 else f"block-level, blocks of {block}x{block} tokens"
    console.print(Text(f"{mask.name} S={mask.seqlen} ({level}): {out}"))
