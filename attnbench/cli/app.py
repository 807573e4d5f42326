"""The `attnbench` command line: parse, call one function, render. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.text import Text

from attnbench.cli.console import plain_console
from attnbench.errors import UserError
from attnbench.cases import MAX_ROUNDS
from attnbench.measure.threads import MAX_THREADS

app = typer.Typer(
    help="Benchmark attention kernels, masks and context-parallel methods for long-context training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
masks_app = typer.Typer(help="Inspect mask patterns.", no_args_is_help=True)
app.add_typer(masks_app, name="masks")

console = plain_console()
err_console = plain_console(stderr=True)

DEFAULT_RESULTS = Path("results")

# options several commands share
ProfileOption = Annotated[Optional[str], typer.Option(help="Profile of overrides ('none' for none).")]
KernelsOption = Annotated[Optional[List[str]], typer.Option(help="Only these kernels (comma-separated).")]
MasksOption = Annotated[Optional[List[str]], typer.Option(help="Only these masks.")]
SeqlensOption = Annotated[Optional[List[str]], typer.Option(help="Only these sequence lengths.")]
RootOption = Annotated[Path, typer.Option("--root", help="Results root for run ids.")]


def _split(values: Optional[List[str]]) -> Optional[list[str]]:
    """Accept both `--kernels a,b` and `--kernels a --kernels b`."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _parse_set(items: Optional[List[str]]) -> dict:
    params: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: use key=value")
        key, _, raw = item.partition("=")
        params[key.strip()] = _scalar(raw.strip())
    return params


def _scalar(raw: str):
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


# -- list ------------------------------------------------------------------------------
@app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    device: Optional[str] = typer.Option(None, help="Device to report availability for (default: cuda if present)."),
) -> None:
    """Kernels (availability, reason, support), masks and CP methods."""
    from attnbench.inventory import inventory

    data = inventory(device)
    if as_json:
        console.print_json(json.dumps(data))
        return
    from attnbench.cli.screens import print_inventory

    print_inventory(console, data)


# -- masks info ------------------------------------------------------------------------
@masks_app.command("info")
def masks_info(
    name: str = typer.Argument(..., help="Mask name (see `attnbench list`)."),
    seqlen: str = typer.Option(..., "--seqlen", "-s", help="Sequence length, e.g. 4096 or 64K."),
    seed: Optional[int] = typer.Option(None, help="Seed for masks that draw documents or prefixes."),
    heads: int = typer.Option(1, help="Heads (block-sparse masks differ per head)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Mask parameter key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Slices, area, density and documents of one mask."""
    from attnbench.masks import MASKS, build_mask
    from attnbench.suite import parse_seqlen

    params = _parse_set(set_)
    if seed is not None:
        params["seed"] = seed
    if heads < 1:
        raise UserError("--heads must be >= 1")
    family = MASKS.get(name)
    mask = build_mask(name, parse_seqlen(seqlen), params, heads=heads if family.dynamic else 1)
    info = mask.info()
    if as_json:
        console.print_json(json.dumps(info))
        return
    from attnbench.cli.screens import print_mask_info

    print_mask_info(console, info)


# -- env -------------------------------------------------------------------------------
@app.command("env")
def env_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The environment block that every run records."""
    import torch

    from attnbench.measure.environment import capture_environment

    env = capture_environment("cuda" if torch.cuda.is_available() else "cpu")
    if as_json:
        console.print_json(json.dumps(env, default=str))
        return
    from attnbench.cli.screens import print_environment

    print_environment(console, env)


# -- validate --------------------------------------------------------------------------
@app.command("validate")
def validate_command(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    profile: ProfileOption = None,
    kernels: KernelsOption = None,
    masks: MasksOption = None,
    seqlens: SeqlensOption = None,
) -> None:
    """Check a suite: case count, what is unsupported, predicted duration."""
    from attnbench.cli.screens import print_plan
    from attnbench.runner.plan import plan_suite

    loaded = _load(suite, profile, kernels, masks, seqlens)
    print_plan(console, loaded, plan_suite(loaded))


# -- run -------------------------------------------------------------------------------
@app.command("run")
def run_command(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", help="Results root; the run goes to OUT/<run-id>/."),
    profile: ProfileOption = None,
    kernels: KernelsOption = None,
    masks: MasksOption = None,
    seqlens: SeqlensOption = None,
    nnodes: Optional[int] = typer.Option(None, "--nnodes", help="CP: nodes taking part (run the same command on each)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="CP: this node's index, 0..nnodes-1."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="CP: HOST:PORT of node 0 (with --nnodes > 1)."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", help="Seconds a case may run before it is killed and recorded as timeout (overrides the suite)."
    ),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue this run (directory, id or latest): cases with a record are not run again."
    ),
    inline: bool = typer.Option(False, "--inline", help="Run kernel cases in this process (debugging; no isolation)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, max=MAX_THREADS,
        help="torch's CPU threads while measuring (default: 1 on CPU, torch's default on CUDA; or OMP_NUM_THREADS).",
    ),
    rounds: Optional[int] = typer.Option(
        None, "--rounds", min=1, max=MAX_ROUNDS,
        help="Visits per case, spread over the run (overrides the suite's budget.rounds; CP cases: 1).",
    ),
) -> None:
    """Run a suite and write results/<run-id>/ (records.jsonl, run.json, tables)."""
    from attnbench.cli.screens import run_with_progress
    from attnbench.cp.launch import LaunchOptions
    from attnbench.results.store import resolve_run

    cp_launch = LaunchOptions.resolve(nnodes, node_rank, rdzv_endpoint)
    loaded = _load(suite, profile, kernels, masks, seqlens)
    if timeout is not None:
        if not timeout > 0:
            raise UserError(f"--timeout must be > 0 seconds (got {timeout:g})")
        loaded = loaded.model_copy(update={"cases": [case.with_timeout(timeout) for case in loaded.cases]})
    if rounds is not None:
        loaded = loaded.model_copy(update={"cases": [case.with_rounds(rounds) for case in loaded.cases],
                                           "filters": {**loaded.filters, "rounds": [rounds]}})  # resume: the same
    follower = cp_launch.multi_node and cp_launch.node_rank != 0  # follows node 0, which resumes
    resume_dir = resolve_run(resume, out) if resume and not follower else None
    argv = list(sys.argv[1:])
    run_with_progress(console, loaded, out, cp_launch=cp_launch, isolate=not inline, resume=resume_dir, threads=threads,
                      resume_command=lambda run_dir: resume_command_line(argv, run_dir))


def resume_command_line(argv: list[str], run_dir: Path) -> str:
    """The command that continues `run_dir`: this command's own arguments, `--resume` replaced."""
    import shlex

    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            args.append(arg)
    return shlex.join(["attnbench", *args, "--resume", str(run_dir)])


# -- show ------------------------------------------------------------------------------
@app.command("show")
def show_command(
    run: str = typer.Argument("latest", help="Run directory, run id, latest or latest~N."),
    root: RootOption = DEFAULT_RESULTS,
) -> None:
    """Re-render the tables of a finished run."""
    from attnbench.cli.screens import print_run
    from attnbench.results.store import load_run, resolve_run

    print_run(console, load_run(resolve_run(run, root)))


# -- compare ---------------------------------------------------------------------------
@app.command("compare")
def compare_command(
    base: str = typer.Argument(..., help="Base run: directory, run id, latest or latest~N."),
    current: str = typer.Argument(..., help="Current run: directory, run id, latest or latest~N."),
    root: RootOption = DEFAULT_RESULTS,
    threshold: float = typer.Option(0.05, "--threshold", help="Smallest change that counts (0.05 = 5%)."),
    fail_on: str = typer.Option("regression", "--fail-on", help="Exit 1 on: regression (or new failure), failure, never."),
    fmt: str = typer.Option("table", "--format", help="table, markdown or json."),
    allow_env_change: bool = typer.Option(False, "--allow-env-change", help="Compare even if device, driver, torch, triton or CUDA differ."),
    canary_threshold: float = typer.Option(
        0.25, "--canary-threshold",
        help="A round whose canary is this much slower than its run's usual is disturbed; a case whose canary moved more is noisy.",
    ),
    normalise_drift: bool = typer.Option(False, "--normalise-drift", help="Divide the machine's drift between the runs (canary) out of the current times."),
    wall_time: bool = typer.Option(False, "--wall-time", help="Compare one-thread CPU cases on wall time, not thread CPU time."),
    confirm: bool = typer.Option(False, "--confirm", help="Measure the flagged cases again now (current code); keep only changes that reproduce."),
    confirm_rounds: int = typer.Option(5, "--confirm-rounds", min=2, max=20, help="Rounds per case in the --confirm run."),
    base_source: Optional[Path] = typer.Option(
        None, "--base-source", help="--confirm: a checkout of the base's code (e.g. a git worktree), measured side by side.",
    ),
    base_env: Optional[List[str]] = typer.Option(
        None, "--base-env", help="--confirm: NAME=VALUE (or NAME, unset) for the base's side, measured side by side.",
    ),
) -> None:
    """Compare two runs case by case; exit 1 on a regression or a new failure."""
    from attnbench.cli.regress import CompareOptions, base_code_of, compare_screen

    options = CompareOptions(threshold, fail_on, fmt, allow_env_change, canary_threshold, normalise_drift,
                             confirm_rounds if confirm else None, base_code_of(confirm, base_source, base_env),
                             cpu_time=not wall_time)
    code = compare_screen(console, base, current, root, options)
    if code:
        raise typer.Exit(code)


# -- history ---------------------------------------------------------------------------
@app.command("history")
def history_command(
    root: Path = typer.Option(DEFAULT_RESULTS, "--root", help="Results root to import runs from."),
    db: Optional[Path] = typer.Option(None, "--db", help="SQLite file (default ROOT/history.sqlite)."),
    kernel: Optional[List[str]] = typer.Option(None, "--kernel", help="Only these kernels (comma-separated)."),
    mask: Optional[List[str]] = typer.Option(None, "--mask", help="Only these masks."),
    seqlen: Optional[List[str]] = typer.Option(None, "--seqlen", help="Only these sequence lengths."),
    pass_: Optional[List[str]] = typer.Option(None, "--pass", help="Only these passes."),
    last: int = typer.Option(8, "--last", help="Runs shown in the trend table."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import runs into the history database; list runs and the trend of each case."""
    from attnbench.cli.regress import history_screen

    history_screen(console, root, db, _split(kernel), _split(mask), _split(seqlen), _split(pass_), last, as_json)


# -- report ----------------------------------------------------------------------------
@app.command("report")
def report_command(
    runs: List[str] = typer.Argument(..., help="Runs (directory, run id, latest, latest~N), oldest first."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    root: RootOption = DEFAULT_RESULTS,
) -> None:
    """One self-contained HTML report (figures, support matrix, masks; compare and trend for several runs)."""
    from attnbench.cli.regress import report_screen

    report_screen(console, runs, out, root)


# -- inspect ---------------------------------------------------------------------------
@app.command("inspect")
def inspect_command(
    kernels: List[str] = typer.Argument(..., help="Triton-based kernels, e.g. triton_slices."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Target: sm80, sm90 (default) or sm100; compiled here, no GPU needed."),
    dtype: str = typer.Option("bf16", "--dtype", help="float32|float16|bfloat16 (fp32, fp16, bf16)."),
    head_dim: int = typer.Option(128, "--head-dim"),
    pass_: str = typer.Option("both", "--pass", help="forward, backward or both."),
    mask: str = typer.Option("causal", "--mask", help="The mask whose launches are compiled."),
    seqlen: str = typer.Option("16K", "--seqlen", help="Sequence length of the launches."),
    heads: str = typer.Option("64:8", "--heads", help="Query heads:kv heads."),
    launch: bool = typer.Option(False, "--launch", help="On a GPU: run the launches and read what Triton compiled for them."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (for CI)."),
) -> None:
    """Registers, spills, shared memory, occupancy, MMA per dot, pipeline buffers and atomics of
    each compiled function of a Triton-based kernel."""
    from attnbench.inspect import build_query, inspect_kernels
    from attnbench.suite import parse_seqlen

    query = build_query(arch=arch, dtype=dtype, head_dim=head_dim, pass_=pass_, mask=mask,
                        seqlen=parse_seqlen(seqlen), heads=heads, launch=launch)
    reports = inspect_kernels(_split(kernels) or [], query)
    if as_json:
        console.print_json(json.dumps({"reports": [r.to_dict() for r in reports]}))
        return
    from attnbench.cli.inspect_view import print_report

    for report in reports:
        print_report(console, report)


# -- tune ------------------------------------------------------------------------------
@app.command("tune")
def tune_command(
    kernel: str = typer.Argument(..., help="triton_slices (its configuration table)."),
    head_dims: str = typer.Option("64,128", "--head-dims", help="Head dims to tune (comma-separated)."),
    dtypes: str = typer.Option("bf16", "--dtypes", help="Dtypes to tune (comma-separated)."),
    passes: str = typer.Option("forward,dkdv,dq", "--passes", help="Kernels to tune: forward, dkdv, dq."),
    out: Optional[Path] = typer.Option(None, "--out", help="Table to merge the best rows into (default: the package's tuned.json)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compile and screen the candidates only (no GPU needed)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="With --dry-run: the target (default sm90)."),
) -> None:
    """Sweep triton_slices' tiles on this GPU and write the fastest per (head dim, dtype, pass)."""
    from attnbench.cli.inspect_view import print_trial, print_tune
    from attnbench.kernels.triton_slices.tune import TABLE, run_tune, write_table

    try:
        dims = [int(x) for x in head_dims.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--head-dims must be integers, e.g. 64,128 (got {head_dims!r})") from None
    command = "attnbench tune " + " ".join(sys.argv[2:])
    arch_used, trials, rows = run_tune(kernel, arch=arch, head_dims=dims, dtypes=_split([dtypes]) or [],
                                       passes=_split([passes]) or [], dry_run=dry_run, command=command,
                                       progress=lambda head_dim, dtype, trial: print_trial(console, head_dim, dtype, trial))
    if rows:
        write_table(rows, out or TABLE)
    print_tune(console, arch_used, rows, out or TABLE, dry_run)


# -- netbench --------------------------------------------------------------------------
@app.command("netbench")
def netbench_command(
    world_sizes: Optional[str] = typer.Option(
        None, "--world-sizes", help="Worlds to measure, comma-separated (default: 2,4 on CPU; the GPUs of every node on CUDA)."),
    sizes: Optional[str] = typer.Option(
        None, "--sizes", help="Bytes one rank sends per call, e.g. 1K,64K,4M (default: 1K..4M on CPU, 64K..1G on CUDA)."),
    ops: str = typer.Option("all_to_all,all_gather,reduce_scatter,p2p", "--ops", help="Collectives to time."),
    repeats: int = typer.Option(20, "--repeats", min=2, max=10000, help="Timed calls per point."),
    device: str = typer.Option("auto", "--device", help="auto, cpu (gloo) or cuda (NCCL)."),
    out: Path = typer.Option(Path("netbench.json"), "--out", help="The profile file to write (node 0)."),
    name: Optional[str] = typer.Option(None, "--name", help="The profile's name (default: backend-host)."),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", help="Nodes taking part (run the same command on each)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="This node's index, 0..nnodes-1."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of node 0 (with --nnodes > 1)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds one world's launch may take."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
) -> None:
    """Time the collectives CP methods use and write a fitted latency + bandwidth profile."""
    import torch

    from attnbench.advise.network import DEFAULT_SIZES, measure_profile, parse_bytes
    from attnbench.cli.advise_view import print_network_profile
    from attnbench.cp.launch import LaunchOptions
    from attnbench.cp.netbench import NetbenchFailed

    options = LaunchOptions.resolve(nnodes, node_rank, rdzv_endpoint)
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda (got {device!r})")
    if not timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds (got {timeout:g})")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dev == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here")
    if world_sizes:
        try:
            worlds = [int(w) for w in _split([world_sizes])]
        except ValueError:
            raise UserError(f"--world-sizes must be integers, e.g. 2,4 (got {world_sizes!r})") from None
    else:
        worlds = [torch.cuda.device_count() * options.nnodes] if dev == "cuda" else [2 * options.nnodes, 4 * options.nnodes]
    message_sizes = [parse_bytes(x) for x in _split([sizes or DEFAULT_SIZES[dev]])]
    backend = "nccl" if dev == "cuda" else "gloo"
    import socket

    profile_name = name or f"{backend}-{socket.gethostname()}"
    command = "attnbench netbench " + " ".join(sys.argv[2:])
    try:
        profile = measure_profile(
            world_sizes=worlds, sizes=message_sizes, ops=_split([ops]) or [], repeats=repeats, device=dev, options=options,
            timeout_s=timeout, name=profile_name, description=f"{backend} measured by attnbench netbench", command=command,
            progress=lambda world, job: err_console.print(f"netbench: world size {world}: {len(job.layouts)} group layouts, "
                                                          f"{len(job.ops)} collectives, {len(job.sizes)} sizes"),
        )
    except NetbenchFailed as exc:
        _print_error(f"netbench failed: {exc}")
        raise typer.Exit(1)
    if profile is None:
        console.print(f"node {options.node_rank}: done (node 0 writes the profile)")
        return
    out.write_text(profile.model_dump_json(indent=1), encoding="utf-8")
    if as_json:
        console.print_json(profile.model_dump_json())
        return
    print_network_profile(console, profile, out)


# -- advise ----------------------------------------------------------------------------
@app.command("advise")
def advise_command(
    mask: Optional[str] = typer.Option(None, "--mask", help="The mask (a static one, see `attnbench list`)."),
    seqlen: Optional[str] = typer.Option(None, "--seqlen", "-s", help="Global sequence length, e.g. 1M."),
    gpus: int = typer.Option(64, "--gpus", help="GPUs (ranks) the sequence is split over."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (groups inside a node use the intra link)."),
    heads: str = typer.Option("64:8", "--heads", help="Query heads:kv heads."),
    head_dim: int = typer.Option(128, "--head-dim"),
    dtype: str = typer.Option("bf16", "--dtype", help="float32|float16|bfloat16 (fp32, fp16, bf16)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Mask parameter key=value (repeatable)."),
    kernel_run: Optional[str] = typer.Option(
        None, "--kernel-run", help="A kernel run (directory, id, latest) whose measured calls price compute."),
    kernel_figures: Optional[str] = typer.Option(
        None, "--kernel-figures", help="Published kernel figures (shipped name or file; default h100-fa3 without --kernel-run)."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="The local kernel to price (default: the figures' only one, or flex)."),
    network: Optional[str] = typer.Option(
        None, "--network", help="Network profile: a file from `attnbench netbench` or a shipped name (default h100-nvlink-ib400)."),
    gpu_memory: Optional[str] = typer.Option(None, "--gpu-memory", help="Memory per GPU, e.g. 80G (default: the figures' device)."),
    check: Optional[List[str]] = typer.Option(
        None, "--check", help="Predict every case of this CP run and compare with what it measured (repeatable: several "
                              "runs of one suite, against the median of their measurements)."),
    calibrate: Optional[str] = typer.Option(
        None, "--calibrate", help="With --check: another CP run on this machine whose compute-only and communication-only "
                                  "times scale the predictions per world size."),
    root: RootOption = DEFAULT_RESULTS,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Rank every CP method and parameter set for one question, predicted from measured compute and
    network figures, with the reason each wins or loses; or check the model against a CP run."""
    from attnbench.advise import api
    from attnbench.cli import advise_view

    if check:
        report = api.check(check, kernel_run=kernel_run, network=network, root=root, calibrate=calibrate)
        if as_json:
            from attnbench.advise.check import check_dict

            console.print_json(json.dumps(check_dict(report)))
            return
        advise_view.print_check(console, report)
        return
    if calibrate:
        raise UserError("--calibrate goes with --check RUN (it scales the predictions of this machine's world sizes)")
    if not mask or not seqlen:
        raise UserError("advise needs --mask and --seqlen (or --check RUN)")
    from attnbench.advise.network import parse_bytes
    from attnbench.suite import parse_seqlen

    try:
        hq, hkv = (int(x) for x in heads.split(":"))
    except ValueError:
        raise UserError(f"--heads must be Q:KV, e.g. 64:8 (got {heads!r})") from None
    advice = api.advise_question(
        mask=mask, mask_params=_parse_set(set_), seqlen=parse_seqlen(seqlen), gpus=gpus, gpus_per_node=gpus_per_node,
        heads=(hq, hkv), head_dim=head_dim, dtype=dtype, kernel=kernel, kernel_run=kernel_run, figures=kernel_figures,
        network=network, memory_bytes=parse_bytes(gpu_memory) if gpu_memory else None, root=root,
    )
    if as_json:
        from attnbench.advise.rank import advice_dict

        console.print_json(json.dumps(advice_dict(advice)))
        return
    advise_view.print_advice(console, advice)


# -- masks show ------------------------------------------------------------------------
@masks_app.command("show")
def masks_show(
    name: str = typer.Argument(..., help="Mask name (see `attnbench list`)."),
    seqlen: str = typer.Option(..., "--seqlen", "-s", help="Sequence length, e.g. 4096 or 64K."),
    out: Path = typer.Option(Path("mask.png"), "--out", help="Picture file (.png, .svg or .pdf)."),
    seed: Optional[int] = typer.Option(None, help="Seed for masks that draw documents or prefixes."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Mask parameter key=value (repeatable)."),
    heads: int = typer.Option(1, help="Heads to build (block-sparse masks differ per head)."),
    head: int = typer.Option(0, help="Which head to draw."),
    blocks: int = typer.Option(256, help="At most this many blocks per side; above it the picture is block-level."),
) -> None:
    """The mask as a picture (exact for small S, block-level for large S)."""
    from attnbench.cli.regress import mask_show_screen

    params = _parse_set(set_)
    if seed is not None:
        params["seed"] = seed
    mask_show_screen(console, name, seqlen, params, heads, head, blocks, out)


def _load(suite: Path, profile, kernels, masks, seqlens):
    import torch

    from attnbench.suite import load_suite

    loaded = load_suite(suite, profile=profile, cuda_available=torch.cuda.is_available())
    if kernels or masks or seqlens:
        loaded = loaded.filter(kernels=_split(kernels), masks=_split(masks), seqlens=_split(seqlens))
    return loaded


def _print_error(message: str) -> None:
    """Bad input: one line on stderr (the message is printed as written, never read as markup)."""
    err_console.print(Text.assemble(("error: ", "red"), " ".join(message.split())), highlight=False, soft_wrap=True)


def _click_message(exc) -> str:
    """click's usage error (bad option, missing argument) as one line, with where to find help."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None)
    return f"{exc.format_message()} (see `{command} --help`)" if command else exc.format_message()


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        _print_error(str(exc))
        sys.exit(2)
    except MemoryError:  # a question too large for this machine (a run's cases catch their own)
        _print_error("out of memory: the input asks for more memory than this machine has "
                     "(a shorter sequence, fewer cases or a smaller world)")
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        sys.exit(0)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # click's own errors (bad option, missing argument); typer ships its own click copy,
        # so recognise them by their interface rather than their class
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            _print_error(_click_message(exc))
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
