"""A comparison as a rich table (terminal), markdown (a pull-request comment) or JSON."""

from __future__ import annotations

import html
import json
import math
from typing import Optional

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from attnbench.compare.core import CaseComparison, Comparison, SampleStats, State

STATE_STYLE = {
    State.new_failure: "bold red",
    State.regressed: "red",
    State.noisy: "yellow",
    State.incomparable: "magenta",
    State.removed: "yellow",
    State.fixed: "green",
    State.improved: "green",
    State.added: "cyan",
    State.unchanged: "dim",
}


def _ms(stats: Optional[SampleStats], status: Optional[str]) -> str:
    if stats is not None:
        value = stats.estimate_s if stats.estimate_s is not None else stats.median_s
        return f"{value * 1e3:.4g} ms (n={stats.n})"
    return status or "-"


def _change(c: CaseComparison) -> str:
    if c.ratio is None or not math.isfinite(c.ratio):
        return ""
    return f"{c.change:+.1%}"


def _p(c: CaseComparison) -> str:
    if c.p_value is not None:
        return f"{c.p_value:.2g}"
    if c.test == "disjoint ranges":
        return "disjoint" if c.significant else "overlap"
    return ""


def _notes(c: CaseComparison) -> list[str]:
    notes = [c.reason] if c.reason else []
    if c.throttled:
        notes.append("throttled: " + ", ".join(c.throttled))
    if c.noise:
        notes.append(c.noise)
    disturbed = [f"{side} {n}" for side, n in c.disturbed_rounds.items() if not n.startswith("0/")]
    if disturbed:
        notes.append("disturbed rounds left out: " + ", ".join(disturbed))
    if c.confirm:
        notes.append(c.confirm)
    return notes


def timer_line(cmp: Comparison) -> str | None:
    count = sum(1 for c in cmp.cases if c.timer == "thread cpu")
    if not count:
        return None
    return (f"{count} CPU case(s) compared on thread CPU time, not wall time "
            "(one thread: the time waiting for a core left out; --wall-time for wall time)")


def drift_line(cmp: Comparison) -> str | None:
    """The machine's drift between the runs, from the canary (compare.canary), in words."""
    d = cmp.drift or {}
    if d.get("ratio") is None:
        return None
    done = "divided out" if d.get("normalised") else "not divided out (--normalise-drift)"
    return (f"machine drift (canary {d.get('workload')}): {d['ratio'] - 1:+.1%} "
            f"({d['base_canary_s'] * 1e3:.4g} -> {d['current_canary_s'] * 1e3:.4g} ms), {done}")


def confirm_line(cmp: Comparison) -> str | None:
    c = cmp.confirmed or {}
    if not c:
        return None
    return (f"--confirm: {c.get('cases', 0)} flagged case(s) measured again in {c.get('rounds')} rounds "
            f"({c.get('how')}): {c.get('reproduced', 0)} reproduced" + (f"; run {c['run']}" if c.get("run") else ""))


def summary_line(cmp: Comparison) -> str:
    counts = cmp.counts()
    parts = [f"{n} {State(s).label}" for s, n in counts.items() if n]
    return ", ".join(parts) or "no cases"


def geomean_lines(cmp: Comparison) -> list[str]:
    return [
        f"{group}: {g['ratio']:.3f}x time ({g['ratio'] - 1:+.1%}) over {int(g['cases'])} case(s)"
        for group, g in cmp.geomeans.items()
    ]


def print_comparison(console: Console, cmp: Comparison, *, show_unchanged: bool = True) -> None:
    console.print(
        Text(
            f"compare {cmp.base.run_id} ({cmp.base.suite}) -> {cmp.current.run_id} ({cmp.current.suite}); "
            f"threshold {cmp.threshold:.1%}, alpha {cmp.alpha:g}"
        )
    )
    for line in (timer_line(cmp), drift_line(cmp), confirm_line(cmp)):
        if line:
            console.print(Text(line))
    for warning in cmp.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), warning))
    for dev, diffs in cmp.env_differences.items():
        what = "compared anyway" if cmp.allow_env_change else "cases incomparable"
        console.print(Text.assemble(("environment ", "magenta"), f"({dev}, {what}): ", "; ".join(map(str, diffs))))
    if cmp.info_differences:
        console.print(Text("other environment differences (not enforced): " + "; ".join(map(str, cmp.info_differences)), style="dim"))
    table = RichTable(header_style="bold")
    for col, justify, width in (("state", "left", 9), ("case", "left", 28), ("base", "right", 10),
                                ("current", "right", 10), ("change", "right", 7), ("p", "right", 6), ("note", "left", 20)):
        table.add_column(col, justify=justify, overflow="fold", min_width=width)
    for c in cmp.cases:
        if c.state is State.unchanged and not show_unchanged and not c.noise and not c.throttled:
            continue
        table.add_row(
            Text(c.state.label, style=STATE_STYLE[c.state]),
            Text(c.label),
            Text(_ms(c.base, c.base_status)),
            Text(_ms(c.current, c.current_status)),
            Text(_change(c)),
            Text(_p(c)),
            Text("\n".join(_notes(c))),
        )
    console.print(table)
    if cmp.geomeans:
        console.print(Text("geometric mean of current/base time, per kernel (or CP method):", style="bold"))
        for line in geomean_lines(cmp):
            console.print(Text("  " + line))
    for line in cmp.advice:
        console.print(Text(line, style="yellow"))
    console.print(Text(summary_line(cmp)))


def _md(text: object) -> str:
    """Text from records, safe inside a markdown table cell (no HTML, no pipes, no newlines)."""
    out = html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")
    for ch in "`*_[]":
        out = out.replace(ch, "\\" + ch)
    return out


def to_markdown(cmp: Comparison, *, max_rows: int = 200) -> str:
    counts = cmp.counts()
    bad = counts["new_failure"] + counts["regressed"]
    verdict = "❌ regressions found" if bad else "✅ no regression"
    lines = [
        f"## attnbench compare: {verdict}",
        "",
        f"`{_md(cmp.base.run_id)}` ({_md(cmp.base.suite)}) → `{_md(cmp.current.run_id)}` ({_md(cmp.current.suite)}); "
        f"threshold {cmp.threshold:.1%}, significance: Mann-Whitney U p < {cmp.alpha:g}",
        "",
        "**" + _md(summary_line(cmp)) + "**",
        "",
    ]
    for line in (timer_line(cmp), drift_line(cmp), confirm_line(cmp)):
        if line:
            lines += [_md(line), ""]
    for warning in cmp.warnings:
        lines.append(f"> ⚠️ {_md(warning)}")
    for dev, diffs in cmp.env_differences.items():
        what = "compared anyway" if cmp.allow_env_change else "cases incomparable"
        lines.append(f"> environment ({dev}, {what}): {_md('; '.join(map(str, diffs)))}")
    if cmp.warnings or cmp.env_differences:
        lines.append("")
    header = ["state", "case", "base", "current", "change", "p", "note"]

    def table(rows: list[CaseComparison]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for c in rows[:max_rows]:
            cells = [c.state.label, c.label, _ms(c.base, c.base_status), _ms(c.current, c.current_status),
                     _change(c), _p(c), "; ".join(_notes(c))]
            out.append("| " + " | ".join(_md(x) for x in cells) + " |")
        if len(rows) > max_rows:
            out.append(f"\n... and {len(rows) - max_rows} more (see the JSON output)")
        return out

    notable = [c for c in cmp.cases if c.state is not State.unchanged or c.noise or c.throttled]
    quiet = [c for c in cmp.cases if c not in notable]
    if notable:
        lines += table(notable)
    else:
        lines.append("Every case unchanged.")
    if quiet:
        lines += ["", f"<details><summary>{len(quiet)} unchanged case(s)</summary>", ""] + table(quiet) + ["", "</details>"]
    if cmp.geomeans:
        lines += ["", "Geometric mean of current/base time:", ""]
        lines += [f"- {_md(line)}" for line in geomean_lines(cmp)]
    if cmp.advice:
        lines += [""] + [f"> {_md(line)}" for line in cmp.advice]
    return "\n".join(lines) + "\n"


def to_json(cmp: Comparison, fail_on: str = "regression") -> str:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(cmp.to_dict(fail_on)), indent=2, default=str)
