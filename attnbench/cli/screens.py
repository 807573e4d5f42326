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


def _support_text(s: dict) -> str:
    """One device's support of a kernel or CP method, as one wrapped paragraph."""
    masks = "all masks" if s["masks"] == "all" else ", ".join(s["masks"])
    passes = ", ".join(PASS_SHORT.get(p, p) for p in s["passes"])
    if s.get("note"):
        passes += f" ({s['note']})"
    dtypes = ", ".join(DTYPE_SHORT.get(d, d) for d in s["dtypes"])
    head_dims = "any head dim" if s["head_dims"] == "any" else "head dim " + ", ".join(map(str, s["head_dims"]))
    if s.get("max_head_dim"):
        head_dims += f" (<= {s['max_head_dim']})"
    return f"{masks}; {passes}; {dtypes}; {head_dims}; GQA {'yes' if s['gqa'] else 'no'}"


def print_inventory(console: Console, data: dict) -> None:
    """Names never wrap or shorten (they are what one types); the long fields wrap in their cell,
    so the screen reads at 80 columns."""
    here = data["device"].split(":")[0]
    kernels = RichTable(title=f"Kernels (availability on {data['device']})", title_justify="left")
    kernels.add_column("kernel", no_wrap=True)
    kernels.add_column("available", ratio=2)
    kernels.add_column("description", ratio=3, overflow="fold")
    for k in data["kernels"]:
        kernels.add_row(Text(k["name"]), _availability(k["available"], k["reason"]), Text(k.get("description", "")))
    console.print(kernels)
    support = RichTable(title="Kernel support: masks; passes; dtypes; head dims; GQA", title_justify="left")
    support.add_column("kernel", no_wrap=True)
    support.add_column("device", no_wrap=True)
    support.add_column("supports", overflow="fold")
    for k in data["kernels"]:
        devices = sorted(k["support"], key=lambda d: (d != here, d))  # this device first
        for i, device in enumerate(devices):
            support.add_row(Text(k["name"] if i == 0 else ""), Text(device), Text(_support_text(k["support"][device])))
        if not devices:
            support.add_row(Text(k["name"]), Text("-"), Text("no device"))
    console.print(support)
    masks = RichTable(title="Masks", title_justify="left")
    masks.add_column("mask", no_wrap=True)
    masks.add_column("parameters (default)", ratio=2)
    masks.add_column("description", ratio=3, overflow="fold")
    for m in data["masks"]:
        kind = "dynamic, per head" if m["dynamic"] else ("documents" if m["documents"] else "static")
        params = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in m["params"].items()) or "-"
        masks.add_row(Text(m["name"]), Text(params), Text.assemble((f"{kind}: ", "dim"), m["description"]))
    console.print(masks)
    if data["cp_methods"]:
        cp = RichTable(title=f"Context-parallel methods (availability on {data['device']})", title_justify="left")
        cp.add_column("method", no_wrap=True)
        cp.add_column("available", ratio=2)
        cp.add_column("parameters", ratio=1)
        cp.add_column("description", ratio=3, overflow="fold")
        for method in data["cp_methods"]:
            avail = _availability(method.get("available"), method.get("reason") or "unavailable")
            params = ", ".join(method.get("params") or {}) or "-"
            cp.add_row(Text(method["name"]), avail, Text(params), Text(method.get("description", "")))
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


def duration_text(seconds: float) -> str:
    """A duration a person reads: 45 s, 3.2 min, 1 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def not_run_groups(plan) -> list[tuple[str, int, str]]:
    """(kernel, case count, reason) of the cases that will not run, one row per reason: skipped
    cases predicted over the same limit form one row, their predictions as a range."""
    groups: dict[tuple, list] = {}
    for p in plan:
        if p.action == "run":
            continue
        kernel = p.case.kernel if p.case.cp is None else f"{p.case.cp.method} ({p.case.kernel})"
        over = p.overrun
        key = (kernel, over.resource, over.limit) if over is not None else (kernel, p.reason or "")
        groups.setdefault(key, []).append(p)
    rows = []
    for key, members in groups.items():
        over = members[0].overrun
        if over is not None:
            values = [m.overrun.predicted for m in members]
            reason = over.describe(min(values), max(values))
        else:
            reason = key[1]
        rows.append((key[0], len(members), reason))
    return sorted(rows, key=lambda row: (row[0], -row[1]))


def print_plan(console: Console, suite, plan) -> None:
    from attnbench.runner.plan import predicted_run_seconds

    _header(console, suite)
    actions = Counter(p.action for p in plan)
    startup, cases = predicted_run_seconds(plan)
    console.print(
        f"  to run: {actions.get('run', 0)}, unsupported: {actions.get('unsupported', 0)}, "
        f"skipped (predicted over budget or memory): {actions.get('skipped', 0)}"
    )
    start = f" + {duration_text(startup)} worker start-up" if startup else ""
    console.print(
        f"  predicted duration: about {duration_text(startup + cases)} ({duration_text(cases)} of cases{start}; "
        "README: How numbers are made, Prediction)"
    )
    cp_run = [p.case for p in plan if p.action == "run" and p.case.cp is not None and p.case.check_accuracy]
    sampled = [c for c in cp_run if c.cp.check_rows is not None]
    if cp_run:
        line = f"  CP accuracy checks: {len(cp_run) - len(sampled)} full"
        if sampled:
            fractions = [c.cp.check_rows * c.cp.world_size / c.shape.seqlen for c in sampled]
            line += (f", {len(sampled)} sampled (the full check predicted over half of budget.case_seconds; "
                     f"{min(fractions):.2%} to {max(fractions):.2%} of the query rows checked exactly)")
        console.print(line)
    rows = not_run_groups(plan)
    if rows:
        table = RichTable(title="Not run", title_justify="left")
        table.add_column("kernel", no_wrap=True)
        table.add_column("cases", justify="right")
        table.add_column("reason")
        for kernel, count, reason in rows:
            table.add_row(kernel, str(count), reason)
        console.print(table)


def run_with_progress(console: Console, suite, out_root: Path, cp_launch=None, *, isolate: bool = True,
                      resume: Path | None = None, threads: int | None = None, resume_command=None) -> Path | None:
    """Run `suite` with a progress bar and an ETA (on a terminal) or one plain line per finished
    case (a log, a pipe), then print the tables. On Ctrl-C: the tables so far, the run's folder
    and the command that resumes it (`resume_command(run_dir)`), then KeyboardInterrupt again.
    A node other than 0 of a multi-node CP run returns None (node 0 has the records)."""
    import time

    from attnbench.results.store import load_run
    from attnbench.runner.eta import Eta
    from attnbench.measure.predict import startup_seconds
    from attnbench.runner.run import RunEvents, RunInterrupted, run_suite

    _header(console, suite, cp_launch)
    if resume is not None:
        console.print(Text(f"Resuming {resume}"))
    plain = not console.is_terminal
    started = time.monotonic()
    state: dict = {"eta": None, "count": 0, "case_started": started, "done": 0, "counts": Counter()}
    with Progress(
        plain_text_column("{task.description}", style="progress.description"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        plain_text_column("{task.fields[eta]}"),
        console=console,
        transient=True,
        disable=plain,
    ) as progress:
        task = progress.add_task("starting the worker", total=None, eta="")

        def on_start(info, count):
            state["count"] = count
            progress.update(task, total=count)

        def on_plan(predicted):
            eta = state["eta"] = Eta(predicted, startup_seconds(list(suite.cases)))
            state["visits"] = len(predicted)
            progress.update(task, total=len(predicted))
            console.print(Text(f"  predicted: about {duration_text(eta.total_seconds())} "
                               f"(corrected as cases finish)"))
            progress.update(task, eta=f"about {duration_text(eta.remaining_seconds())} left")

        def on_case_start(index, case):
            state["case_started"] = time.monotonic()
            progress.update(task, description=case.label())

        def on_visit(index, visit, record):
            seconds = time.monotonic() - state["case_started"]
            state["done"] += 1
            eta = state["eta"]
            left = ""
            if eta is not None:
                eta.finished((index, visit.round), seconds)
                left = f"about {duration_text(eta.remaining_seconds())} left"
            progress.update(task, advance=1, eta=left)
            if plain:
                total = state.get("visits") or state["count"]
                console.print(Text(case_line(state["done"], total, record, seconds, left, visit)), soft_wrap=True)

        def on_record(index, record):
            state["counts"][record.status.value] += 1
            eta = state["eta"]
            if eta is not None:  # the rounds a case will not have (it ended early)
                for key in [k for k in eta.predicted if k[0] == index and k not in eta.done]:
                    eta.dropped(key)
                    progress.update(task, advance=1)
                    state["done"] += 1

        def on_notice(text):
            progress.console.print(Text(text, style="yellow"))

        events = RunEvents(on_start=on_start, on_case_start=on_case_start, on_record=on_record, on_visit=on_visit,
                           on_notice=on_notice, on_plan=on_plan)
        try:
            run_dir = run_suite(suite, out_root, events, cp_launch=cp_launch, isolate=isolate, resume=resume,
                                threads=threads)
        except RunInterrupted as stop:
            progress.stop()
            run = load_run(stop.run_dir)
            print_run(console, run)
            short = sum(1 for r in run.records if r.timing is not None and not r.timing.complete())
            partly = f" ({short} of them measured in fewer rounds than planned)" if short else ""
            console.print(Text(f"Interrupted after {len(run.records)} of {run.info.case_count} cases{partly}; "
                               f"every finished case is in {stop.run_dir}"), soft_wrap=True)
            if resume_command is not None:  # one line, whatever the width: it is copied and pasted
                console.print(Text(f"Resume with: {resume_command(stop.run_dir)}"), soft_wrap=True)
            raise
    if run_dir is None:  # a node other than 0: it took part, node 0 has the records
        counts = state["counts"]
        took = sum(counts.values())
        failed = took - counts.get("ok", 0)
        console.print(f"node {cp_launch.node_rank} of {cp_launch.nnodes} took part in {took} CP cases"
                      f"{f' ({failed} ended badly here)' if failed else ''}; node 0 writes the records and tables")
        return None
    print_run(console, load_run(run_dir))
    took = time.monotonic() - started
    eta = state["eta"]
    predicted = f" (predicted {duration_text(eta.total_seconds())})" if eta is not None else ""
    console.print(Text(f"Took {duration_text(took)}{predicted}"))
    return run_dir


def case_line(done: int, count: int, record, seconds: float, left: str, visit=None) -> str:
    """One finished visit, for logs: `[ 12/364] ok  naive causal S=512 ...: 0.0771 TFLOPs/s in 1.2 s; about 9 min left`
    (`round 2/3` after the count when cases are measured in rounds)."""
    from attnbench.results.tables import significant

    width = len(str(count))
    if record.status.value == "ok" and record.tflops is not None:
        what = f"{significant(record.tflops)} TFLOPs/s"
    else:
        what = record.reason or ""
    tail = f"; {left}" if left else ""
    rounds = f" round {visit.round + 1}/{visit.rounds}" if visit is not None and visit.rounds > 1 else ""
    return (f"[{done:>{width}}/{count}{rounds}] {record.status.value:<11} {record.case.label()}: {what} "
            f"in {seconds:.1f} s{tail}")


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
    console.print(Text(f"Results: {run.path}"), soft_wrap=True)  # a path, never broken across lines
