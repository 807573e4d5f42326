"""Rendering of `attnbench netbench` and `attnbench advise` (tables only; the figures come from
attnbench.advise)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table


def _ms(s) -> str:
    """Milliseconds, three significant figures below 100 ms, whole ones above (no exponents)."""
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.3g}" if abs(ms) < 100 else f"{ms:,.0f}"


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_network_profile(console: Console, profile, path) -> None:
    console.print(f"Network profile {profile.name} ({profile.backend}, {profile.device}) written to {path}")
    for section in profile.sections:
        world = "any world size" if section.world_size is None else f"world size {section.world_size}"
        console.print(f"{world}, {section.ranks_per_node} ranks per node")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for col in ("link", "collective", "latency us", "per hop us", "GB/s", "fit err", "points"):
            table.add_column(col, justify="left" if col in ("link", "collective") else "right", no_wrap=True)
        for link, fits in section.links.items():
            for op, fit in fits.items():
                # a bandwidth the points did not resolve (time flat in size) is no figure
                bandwidth = "-" if fit.bandwidth_Bps >= 1e14 else f"{fit.bandwidth_Bps / 1e9:.3g}"
                table.add_row(link, op, f"{fit.latency_s * 1e6:.1f}", f"{fit.hop_latency_s * 1e6:.1f}",
                              bandwidth, _pct(fit.fit_error), str(len(fit.points)))
        console.print(table)
        console.print(f"  overlap of a transfer with compute: {_pct(section.overlap.hidden)} hidden ({section.overlap.source})")
        if section.compute_slowdown is not None:
            console.print(f"  compute of every rank at once vs one alone: {section.compute_slowdown:.2f}x")


def print_advice(console: Console, advice) -> None:
    q = advice.question
    params = "".join(f", {k}={v}" for k, v in q.mask_params.items())
    console.print(f"CP strategies for {q.mask}{params} at {q.seqlen} tokens on {q.gpus} GPUs ({q.gpus_per_node} per node), "
                  f"heads {q.heads_q}:{q.heads_kv}, head dim {q.head_dim}, {q.dtype}, {' + '.join(q.passes)}")
    console.print(f"  compute: {advice.compute_source}")
    console.print(f"  network: {advice.network_source}")
    if advice.memory_bytes:
        console.print(f"  memory per rank: {_gib(advice.memory_bytes)} GiB")
    console.print("Predicted, fastest first: ms on the slowest rank per pass (fwd, bwd), their total and its "
                  "exposed communication; share of the communication hidden; compute imbalance (slowest / mean); "
                  "estimated peak GiB per rank")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    short = {"forward": "fwd", "backward": "bwd"}
    for col in ("#", "method: plan", *[short.get(p, p) for p in q.passes], "total", "exposed", "hidden",
                "imbal.", "GiB"):
        words = col == "method: plan"
        table.add_column(col, justify="left" if words else "right", overflow="fold", no_wrap=not words,
                         min_width=16 if words else None)
    for o in advice.options:
        if o.status not in ("ranked", "does not fit"):
            continue
        costs = {name: c for p in o.predictions.values() for name, c in p.passes.items()}
        exposed = sum(c.exposed_s for c in costs.values())
        comm = sum(c.communication_s for c in costs.values())
        hidden = None if comm <= 0 else min(1.0, max(0.0, 1 - exposed / comm))
        mean = sum(c.mean_compute_s for c in costs.values())
        imbalance = sum(c.compute_s for c in costs.values()) / mean if mean > 0 else 1.0
        table.add_row(str(o.rank or "-"), f"{o.method}: {_plan(o.plan)}", *[_ms(costs[p].seconds) if p in costs else "-" for p in q.passes],
                      _ms(o.seconds), _ms(exposed), _pct(hidden), f"{imbalance:.2f}", _gib(o.peak_bytes))
    console.print(table)
    console.print("Why:")
    for o in advice.options:
        if o.status in ("ranked", "does not fit"):
            console.print(f"  {o.rank or '-'}. {o.label}: {o.reason}")
    others = [o for o in advice.options if o.status in ("cannot run", "not modelled", "same plan")]
    if others:
        console.print("Not ranked:")
        for o in others:
            console.print(f"  {o.label}: {o.status}: {o.reason}")
    for note in advice.notes:
        console.print(f"  note: {note}")


def _plan(plan: dict) -> str:
    parts = []
    if plan.get("ulysses_degree", 1) != 1:
        parts.append(f"u={plan['ulysses_degree']}")
    if plan.get("rings"):
        parts.append("ring " + "x".join(str(r) for r in plan["rings"]))
    if plan.get("dispatch") and (plan.get("rings") or plan.get("ulysses_degree", 1) == 1):  # a token split to show
        parts.append(plan["dispatch"])
    return ", ".join(parts) or "-"


def print_check(console: Console, report) -> None:
    console.print(f"advise --check {report.run_id}")
    if report.runs:
        console.print(f"  measured: per case the median of {len(report.runs)} runs' median, p20 and p80")
    console.print(f"  compute: {report.compute_source}")
    console.print(f"  network: {report.network_source}")
    if report.calibration:
        console.print(f"  {report.calibration}")
    console.print("Predicted vs measured per case, ms (measured: the median of the slowest rank, and its p20-p80); "
                  "compute only and communication only, as the worker measures them: measured/predicted")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("method", "mask", "W", "pass", "meas.", "p20-p80", "pred.", "error", "compute", "comm"):
        words = col in ("method", "mask")
        table.add_column(col, justify="left" if words or col == "pass" else "right", no_wrap=not words,
                         overflow="fold", min_width=8 if words else None)
    short = {"forward": "fwd", "backward": "bwd"}
    for r in report.rows:
        ma, pa = r.measured_alone or {}, r.predicted_alone or {}
        table.add_row(r.label, r.mask, str(r.world_size), short.get(r.pass_, r.pass_), _ms(r.measured_s),
                      f"{_ms(r.measured_p20_s)}-{_ms(r.measured_p80_s)}", _ms(r.predicted_s), f"{100 * r.error:+.0f}%",
                      f"{_ms(ma.get('compute_s'))}/{_ms(pa.get('compute_s'))}",
                      f"{_ms(ma.get('communication_s'))}/{_ms(pa.get('communication_s'))}")
    console.print(table)
    console.print("Fastest method per (mask, world size), forward + backward")
    groups = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("mask", "W", "measured fastest", "predicted fastest", "agree", "measured margin to 2nd",
                "advice costs"):
        groups.add_column(col)
    for g in report.groups:
        agree = "yes" if g.agree else ("same plan" if g.agree_plan else ("within noise" if g.within_noise else "no"))
        cost = "-" if g.agree_plan else f"+{100 * g.regret:.0f}%"
        groups.add_row(g.mask, str(g.world_size), g.measured_best, g.predicted_best, agree, f"{100 * g.margin:.0f}%", cost)
    console.print(groups)
    for case, why in report.not_predicted:
        console.print(f"  not predicted: {case}: {why}")
    from attnbench.advise.check import CheckReport

    mae = report.median_abs_error
    per_world = ", ".join(f"W={w} {_pct(e)}" for w, e in report.median_abs_error_by_world.items())
    console.print(f"Summary: {len(report.rows)} cases; median absolute error {_pct(mae)} ({per_world}); predicted fastest = measured "
                  f"fastest in {_pct(CheckReport.agreement(report.groups))} of {len(report.groups)} (mask, world size) groups, "
                  f"the same plan in {_pct(CheckReport.agreement(report.groups, by_plan=True))} "
                  f"({_pct(CheckReport.agreement(report.pass_groups))} of {len(report.pass_groups)} per pass)")
    for run in report.runs:
        console.print(f"  run {run.run_id} alone: {len(run.rows)} cases, median absolute error {_pct(run.median_abs_error)}; "
                      f"fastest {_pct(CheckReport.agreement(run.groups))}, the same plan "
                      f"{_pct(CheckReport.agreement(run.groups, by_plan=True))}, within noise "
                      f"{_pct(CheckReport.within_noise(run.groups))} of {len(run.groups)} groups")
    regrets = CheckReport.regrets(report.groups)
    if regrets:
        console.print(f"Following the prediction: the predicted fastest is the fastest or inside its measured p20-p80 in "
                      f"{_pct(CheckReport.within_noise(report.groups))} of the groups; it cost a median "
                      f"{_pct(regrets[0])} (at most {_pct(regrets[1])}) over the measured fastest")
    ref = report.reference
    if ref:
        console.print(f"The same suite measured twice: run {ref.run_id} against this one: case times "
                      f"{_pct(ref.median_abs_difference)} apart (median of {ref.cases}; "
                      + ", ".join(f"W={w} {_pct(x)}" for w, x in ref.by_world.items())
                      + f"); the same fastest method in "
                      f"{ref.same_fastest} of {ref.groups} groups, the same plan in {ref.same_fastest_plan}: "
                      "no prediction agrees with this run more often except by luck")
