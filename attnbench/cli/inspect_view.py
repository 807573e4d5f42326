"""Rendering of ``attnbench inspect`` reports (text; ``--json`` prints the reports as they are)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnbench.inspect.report import FunctionReport, InspectReport


def _dots(f: FunctionReport) -> str:
    counts: dict[str, int] = {}
    for dot in f.dots:
        counts[dot.instruction] = counts.get(dot.instruction, 0) + 1
    return ", ".join(f"{n} {instr}" for instr, n in counts.items()) or "-"


def _loops(f: FunctionReport) -> str:
    return " ".join(str(loop.buffers) for loop in f.loops if loop.dots) or "-"


def _atomics(f: FunctionReport) -> str:
    kinds = sorted({f"{a.op} {a.sem}" for a in f.atomics})
    return ", ".join(kinds) or "-"


def _tiles(f: FunctionReport) -> str:
    c = f.config
    tile = "x".join(str(c[k]) for k in ("block_m", "block_n") if k in c)
    stages = f"s{c['stages']}/{c['part_stages']}" if "stages" in c and "part_stages" in c else f"s{f.num_stages}"
    tuned = "" if c.get("tuned", True) else " untuned"
    return f"{tile} w{f.num_warps} {stages}{tuned}".strip()


def print_report(console: Console, report: InspectReport) -> None:
    q = report.query
    console.print(
        f"[bold]{escape(report.kernel)}[/bold] on {report.arch} ({'compiled here' if report.source == 'offline' else 'launched on this GPU'}, "
        f"triton {report.triton}): {q['dtype']}, head dim {q['head_dim']}, {q['mask']} at {q['seqlen']} tokens, "
        f"heads {q['heads_q']}:{q['heads_kv']}",
        highlight=False,
    )
    table = Table(header_style="bold")
    for name, justify in [("function", "left"), ("tiles", "left"), ("regs", "right"), ("spill B", "right"),
                          ("smem KB", "right"), ("blocks/SM", "right"), ("dots", "left"),
                          ("buffers/loop", "left"), ("atomics", "left")]:
        table.add_column(name, justify=justify)
    for f in report.functions:
        spill = f"{f.spill_store_bytes}/{f.spill_load_bytes}" if f.spill_store_bytes or f.spill_load_bytes else "0"
        table.add_row(escape(f.label), escape(_tiles(f)), str(f.registers), spill,
                      f"{f.shared_bytes / 1024:.1f}", str(f.blocks_per_sm), _dots(f), _loops(f), _atomics(f))
    console.print(table)
    for f in report.functions:
        if not f.dots and not f.findings:
            continue
        console.print(f"[bold]{escape(f.label)}[/bold] ({escape(f.function)})", highlight=False)
        for dot in f.dots:
            console.print(f"  dot {escape(dot.site)} {dot.m}x{dot.n}x{dot.k} {dot.operand}: {dot.instruction}"
                          f"   {escape(dot.source)}", highlight=False)
        for loop in f.loops:
            if loop.dots:
                console.print(f"  loop {escape(loop.site)}: {loop.buffers} buffer{'s' if loop.buffers > 1 else ''}"
                              f"   {escape(loop.source)}", highlight=False)
        for a in f.atomics:
            console.print(f"  atomic {escape(a.site)} {a.op} {a.element} {a.sem} {a.scope}", highlight=False)
        for finding in f.findings:
            console.print(f"  [yellow]! {escape(finding)}[/yellow]", highlight=False)
    console.print()


def print_trial(console: Console, head_dim: int, dtype: str, trial) -> None:
    t = trial.tiles
    what = (f"rejected: {trial.rejected}" if trial.rejected
            else ", ".join(f"{mask} {ms:.3f} ms" for mask, ms in trial.ms.items()) if trial.ms else "screened")
    console.print(f"{trial.pass_:8} d={head_dim} {dtype}: {t.block_m}x{t.block_n} w{t.num_warps} s{t.stages}/{t.part_stages}"
                  f"  regs {trial.registers}, smem {trial.shared_bytes / 1024:.1f} KB, {trial.blocks_per_sm} block(s)/SM: "
                  f"{escape(what)}", highlight=False)


def print_tune(console: Console, arch: str, rows: list[dict], table, dry_run: bool) -> None:
    if dry_run:
        console.print(f"dry run for {arch}: nothing timed, nothing written", highlight=False)
        return
    for row in rows:
        console.print(f"best {row['pass']} d={row['head_dim']} {row['dtype']}: {row['block_m']}x{row['block_n']} "
                      f"w{row['num_warps']} s{row['stages']}/{row['part_stages']}", highlight=False)
    console.print(f"{len(rows)} rows for {arch} written to {escape(str(table))}", highlight=False)
