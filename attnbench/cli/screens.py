"""The CLI's screens: inventory, mask info, environment, plan, run progress, run tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table as RichTable
from rich.text import Text

from attnbench.cli.console import plain_text_column
from attnbench.cli.render import print_tables


PASS_SHORT = {"forward": "fwd", "backward": "bwd", "forward_backward": "fwd+bwd"}
DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def print_inventory(console: Console, data: dict) -> None:
    kernels = RichTable(title=f"Kernels (availability on {data['device']})", title_justify="left")
    for col in ("kernel", "device", "available", "masks", "passes", "dtypes", "head dim", "GQA"):
        kernels.add_column(col)
    for k in data["kernels"]:
        for device, s in k["support"].items():
            here = device == data["device"].split(":")[0]
            avail = _availability(k["available"], k["reason"]) if here else "-"
            masks = "all" if s["masks"] == "all" else ", ".join(s["masks"])
            passes = ", ".join(PASS_SHORT.get(p, p) for p in s["passes"])
            dtypes = ", ".join(DTYPE_SHORT.get(d, d) for d in s["dtypes"])
            head_dims = "any" if s["head_dims"] == "any" else ", ".join(map(str, s["head_dims"]))
            if s.get("max_head_dim"):
                head_dims += f" (<= {s['max_head_dim']})"
            passes_cell = Text.assemble(passes, (f" ({s['note']})", "dim")) if s.get("note") else passes
            kernels.add_row(k["name"], device, avail, masks, passes_cell, dtypes, head_dims, "yes" if s["gqa"] else "no")
        if data["device"].split(":")[0] not in k["support"]:
            kernels.add_row(k["name"], data["device"], _availability(False, k["reason"]), "", "", "", "", "")
    console.print(kernels)
    masks = RichTable(title="Masks", title_justify="left")
    for col in ("mask", "kind", "parameters (default)", "description"):
        masks.add_column(col)
    for m in data["masks"]:
        kind = "dynamic (per head)" if m["dynamic"] else ("documents" if m["documents"] else "static")
        params = ", ".join(f"{k}={v}" for k, v in m["params"].items()) or "-"
        masks.add_row(m["name"], kind, params, m["description"])
    console.print(masks)
    if data["cp_methods"]:
        cp = RichTable(title=f"Context-parallel methods (availability on {data['device']})", title_justify="left")
        for col in ("method", "available", "parameters", "description"):
            cp.add_column(col)
        for method in data["cp_methods"]:
            avail = _availability(method.get("available"), method.get("reason") or "unavailable")
            params = ", ".join(method.get("params") or {}) or "-"
            cp.add_row(method["name"], avail, params, method.get("description", ""))
        console.print(cp)
    else:
        console.print("Context-parallel methods: none registered yet")


def _availability(available: bool, reason) -> Text:
    return Text("yes", style="green") if available else Text.assemble(("no", "yellow"), f": {reason}")


def print_mask_info(console: Console, info: dict) -> None:
    table = RichTable(title=f"Mask {info['name']}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in ("seqlen", "heads", "num_slices", "area", "density", "num_documents", "slices_hash"):
        value = info.get(key)
        if key == "density" and value is not None:
            value = f"{value:.6f}"
        table.add_row(key, "-" if value is None else str(value))
    table.add_row("params", ", ".join(f"{k}={v}" for k, v in info.get("params", {}).items()) or "-")
    console.print(table)


def print_environment(console: Console, env: dict, prefix: str = "") -> None:
    for key, value in env.items():
        if isinstance(value, dict):
            console.print(Text.assemble(prefix, (str(key), "bold"), ":"))
            print_environment(console, value, prefix + "  ")
        elif isinstance(value, list):
            console.print(Text.assemble(prefix, (str(key), "bold"), f": {len(value)} item(s)"))
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    console.print(f"{prefix}  [{i}]")
                    print_environment(console, item, prefix + "    ")
                else:
                    console.print(f"{prefix}  - {item}")
        else:
            console.print(Text.assemble(prefix, (str(key), "bold"), f": {value}"))


def _header(console: Console, suite, cp_launch=None) -> None:
    devices = ", ".join(sorted({c.device for c in suite.cases})) or "-"
    profile = ("profile ", (suite.profile, "bold"), f" ({suite.profile_reason})") if suite.profile else ("no profile",)
    console.print(Text.assemble("Suite ", (suite.name, "bold"), f" from {suite.path}: {len(suite.cases)} cases on {devices}; ", *profile))
    if any(c.cp is not None for c in suite.cases):
        from attnbench.cp.launch import LaunchOptions

        console.print(f"  context parallel: {(cp_launch or LaunchOptions()).describe()}")


def print_plan(console: Console, suite, plan) -> None:
    _header(console, suite)
    actions = Counter(p.action for p in plan)
    total = sum(p.prediction.case_seconds or 0 for p in plan if p.action == "run" and p.prediction)
    console.print(
        f"  to run: {actions.get('run', 0)}, unsupported: {actions.get('unsupported', 0)}, "
        f"skipped (predicted over budget or memory): {actions.get('skipped', 0)}"
    )
    console.print(f"  predicted duration: about {total / 60:.1f} min (prediction from FLOPs and a quick calibration)")
    cp_run = [p.case for p in plan if p.action == "run" and p.case.cp is not None and p.case.check_accuracy]
    sampled = [c for c in cp_run if c.cp.check_rows is not None]
    if cp_run:
        line = f"  CP accuracy checks: {len(cp_run) - len(sampled)} full"
        if sampled:
            fractions = [c.cp.check_rows * c.cp.world_size / c.shape.seqlen for c in sampled]
            line += (f", {len(sampled)} sampled (the full check predicted over half of budget.case_seconds; "
                     f"{min(fractions):.2%} to {max(fractions):.2%} of the query rows checked exactly)")
        console.print(line)
    reasons = Counter(
        (p.case.kernel if p.case.cp is None else f"{p.case.cp.method} ({p.case.kernel})", p.reason)
        for p in plan
        if p.action != "run"
    )
    if reasons:
        table = RichTable(title="Not run", title_justify="left")
        table.add_column("kernel")
        table.add_column("cases", justify="right")
        table.add_column("reason")
        for (kernel, reason), count in sorted(reasons.items(), key=lambda kv: (kv[0][0], -kv[1])):
            table.add_row(kernel, str(count), reason or "")
        console.print(table)


def run_with_progress(console: Console, suite, out_root: Path, cp_launch=None, *, isolate: bool = True,
                      resume: Path | None = None, threads: int | None = None) -> Path | None:
    from attnbench.results.store import load_run
    from attnbench.runner.run import RunEvents, run_suite

    _header(console, suite, cp_launch)
    counts: Counter = Counter()
    with Progress(
        plain_text_column("{task.description}", style="progress.description"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_start(info, count):
            progress.update(task, total=count)

        def on_case_start(index, case):
            progress.update(task, description=case.label())

        def on_record(index, record):
            counts[record.status.value] += 1
            progress.advance(task)

        def on_notice(text):
            progress.console.print(Text(text, style="yellow"))

        events = RunEvents(on_start=on_start, on_case_start=on_case_start, on_record=on_record, on_notice=on_notice)
        if resume is not None:
            console.print(f"Resuming {resume}")
        run_dir = run_suite(suite, out_root, events, cp_launch=cp_launch, isolate=isolate, resume=resume, threads=threads)
    if run_dir is None:  # a node other than 0: it took part, node 0 has the records
        took = sum(counts.values())
        failed = took - counts.get("ok", 0)
        console.print(f"node {cp_launch.node_rank} of {cp_launch.nnodes} took part in {took} CP cases"
                      f"{f' ({failed} ended badly here)' if failed else ''}; node 0 writes the records and tables")
        return None
    print_run(console, load_run(run_dir))
    return run_dir


def print_run(console: Console, run) -> None:
    from attnbench.results.tables import cp_never_run, cp_tables, memory_tables, never_run, performance_tables, records_frame

    for warning in run.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), warning))
    frame = records_frame(run.records)
    print_tables(console, performance_tables(frame))
    print_tables(console, memory_tables(frame))
    for kernel, reason in never_run(frame).items():
        console.print(Text(f"{kernel}: not run in any case ({reason})", style="dim"))
    print_tables(console, cp_tables(frame))
    for method, reason in cp_never_run(frame).items():
        console.print(Text(f"CP method {method}: not run in any case ({reason})", style="dim"))
    counts = Counter(r.status.value for r in run.records)
    summary = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    console.print(f"{len(run.records)} records ({summary}); state: {run.info.state}")
    problems = [r for r in run.records if r.status.value in ("error", "oom", "invalid", "timeout")]
    for r in problems[:20]:
        console.print(Text.assemble("  ", (r.status.value, "red"), f" {r.case.label()}: {r.reason}"))
    if len(problems) > 20:
        console.print(f"  ... and {len(problems) - 20} more (see records.jsonl)")
    console.print(f"Results: {run.path}")
