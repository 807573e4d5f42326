"""The CLI's screens: inventory, mask info, environment, plan, run progress, run tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from attnbench.cli.render import print_tables


def print_inventory(console: Console, data: dict) -> None:
    kernels = RichTable(title=f"Kernels (availability on {data['device']})", title_justify="left")
    for col in ("kernel", "available", "devices", "masks", "passes", "dtypes", "description"):
        kernels.add_column(col)
    for k in data["kernels"]:
        support = k["support"]
        devices = ", ".join(support) or "-"
        first = next(iter(support.values()), {})
        masks = "; ".join(
            f"{dev}: {'all' if s['masks'] == 'all' else ', '.join(s['masks'])}" for dev, s in support.items()
        )
        passes = "; ".join(f"{dev}: {', '.join(s['passes'])}" for dev, s in support.items())
        dtypes = ", ".join(first.get("dtypes", []))
        avail = "[green]yes[/green]" if k["available"] else f"[yellow]no[/yellow]: {k['reason']}"
        kernels.add_row(k["name"], avail, devices, masks, passes, dtypes, k["description"])
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
        cp = RichTable(title="Context-parallel methods", title_justify="left")
        cp.add_column("method")
        cp.add_column("available")
        for method in data["cp_methods"]:
            cp.add_row(method["name"], str(method.get("available", "")))
        console.print(cp)
    else:
        console.print("Context-parallel methods: none registered yet")


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
            console.print(f"{prefix}[bold]{key}[/bold]:")
            print_environment(console, value, prefix + "  ")
        elif isinstance(value, list):
            console.print(f"{prefix}[bold]{key}[/bold]: {len(value)} item(s)")
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    console.print(f"{prefix}  [{i}]")
                    print_environment(console, item, prefix + "    ")
                else:
                    console.print(f"{prefix}  - {item}")
        else:
            console.print(f"{prefix}[bold]{key}[/bold]: {value}")


def _header(console: Console, suite) -> None:
    devices = ", ".join(sorted({c.device for c in suite.cases})) or "-"
    profile = f"profile [bold]{suite.profile}[/bold] ({suite.profile_reason})" if suite.profile else "no profile"
    console.print(f"Suite [bold]{suite.name}[/bold] from {suite.path}: {len(suite.cases)} cases on {devices}; {profile}")


def print_plan(console: Console, suite, plan) -> None:
    _header(console, suite)
    actions = Counter(p.action for p in plan)
    total = sum(p.prediction.case_seconds or 0 for p in plan if p.action == "run" and p.prediction)
    console.print(
        f"  to run: {actions.get('run', 0)}, unsupported: {actions.get('unsupported', 0)}, "
        f"skipped (predicted over budget or memory): {actions.get('skipped', 0)}"
    )
    console.print(f"  predicted duration: about {total / 60:.1f} min (prediction from FLOPs and a quick calibration)")
    reasons = Counter((p.case.kernel, p.reason) for p in plan if p.action != "run")
    if reasons:
        table = RichTable(title="Not run", title_justify="left")
        table.add_column("kernel")
        table.add_column("cases", justify="right")
        table.add_column("reason")
        for (kernel, reason), count in sorted(reasons.items(), key=lambda kv: (kv[0][0], -kv[1])):
            table.add_row(kernel, str(count), reason or "")
        console.print(table)


def run_with_progress(console: Console, suite, out_root: Path) -> Path:
    from attnbench.results.store import load_run
    from attnbench.runner.run import RunEvents, run_suite

    _header(console, suite)
    counts: Counter = Counter()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(suite.cases))

        def on_case_start(index, case):
            progress.update(task, description=case.label())

        def on_record(index, record):
            counts[record.status.value] += 1
            progress.advance(task)

        run_dir = run_suite(suite, out_root, RunEvents(on_case_start=on_case_start, on_record=on_record))
    print_run(console, load_run(run_dir))
    return run_dir


def print_run(console: Console, run) -> None:
    from attnbench.results.tables import memory_tables, never_run, performance_tables, records_frame

    for warning in run.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    frame = records_frame(run.records)
    print_tables(console, performance_tables(frame))
    print_tables(console, memory_tables(frame))
    for kernel, reason in never_run(frame).items():
        console.print(f"[dim]{kernel}: not run in any case ({reason})[/dim]")
    counts = Counter(r.status.value for r in run.records)
    summary = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    console.print(f"{len(run.records)} records ({summary}); state: {run.info.state}")
    problems = [r for r in run.records if r.status.value in ("error", "oom", "invalid", "timeout")]
    for r in problems[:20]:
        console.print(f"  [red]{r.status.value}[/red] {r.case.label()}: {r.reason}")
    if len(problems) > 20:
        console.print(f"  ... and {len(problems) - 20} more (see records.jsonl)")
    console.print(f"Results: {run.path}")
