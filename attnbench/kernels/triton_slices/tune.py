"""The sweep that fills ``tuned.json``: ``attnbench tune triton_slices`` on a GPU.

Per (head dim, dtype, pass) of this GPU's architecture: a few candidate tiles around the
default rule, each first compiled and screened with ``inspect`` (spills, a block that does
not fit: dropped without timing), then timed with the harness's CUDA-event timer on
``causal`` and ``causal_document`` at 16K tokens, batch 1, heads 64:8 (the suites' setting).
The fastest by geometric mean over the masks becomes the row, with the machine, the date,
the Triton version, the measured milliseconds and the command. About 15 candidates per
(head dim, pass); with 2 head dims and bf16 it is meant to finish in under 5 minutes on
one H100 (compiles dominate).

``--dry-run`` lists the candidates and their inspect screen without a GPU (offline compile
for ``--arch``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from attnbench.errors import UserError
from attnbench.kernels.triton_slices.configs import PASSES, TABLE, Config, Tiles, config_for, default_tiles

TUNE_MASKS = ("causal", "causal_document")
TUNE_SEQLEN = 16384
TUNE_HEADS = (64, 8)


@dataclass
class Trial:
    pass_: str
    tiles: Tiles
    registers: int | None = None
    spill_bytes: int | None = None
    blocks_per_sm: int | None = None
    shared_bytes: int | None = None
    rejected: str | None = None  # why it was not timed
    ms: dict[str, float] | None = None  # mask -> median milliseconds

    @property
    def score(self) -> float:
        if not self.ms:
            return math.inf
        return math.exp(sum(math.log(v) for v in self.ms.values()) / len(self.ms))


def candidates(arch: str, head_dim: int, dtype: str, pass_: str, limit: int = 12) -> list[Tiles]:
    """The default rule's tiles first, then neighbours: other tile shapes at 8 and 4 warps,
    3 stages, and 2 stages at 8 warps (partial-entry loops of dk/dv get 2 stages more)."""
    base = default_tiles(arch, head_dim, dtype, pass_)
    extra = 2 if pass_ == "dkdv" else 0
    shapes = {
        "forward": [(128, 64), (128, 128), (64, 64), (64, 128), (128, 32)],
        "dq": [(128, 64), (128, 128), (64, 64), (128, 32), (64, 128)],
        "dkdv": [(32, 128), (16, 128), (64, 64), (32, 64), (64, 128)],
    }[pass_]
    out = [base]
    for warps, stages in ((8, 3), (4, 3), (8, 2)):
        for bm, bn in shapes:
            tiles = Tiles(bm, bn, warps, stages, stages + extra)
            if tiles not in out:
                out.append(tiles)
    return out[:limit]


def _config(arch: str, head_dim: int, dtype: str, pass_: str, tiles: Tiles) -> Config:
    config = config_for(arch, head_dim, dtype, deterministic=pass_ == "dq")
    return config.with_(**{pass_: tiles})


def screen(arch: str, head_dim: int, dtype: str, trial: Trial) -> None:
    """Compile the trial's launch for ``arch`` (offline) and read registers, spills, occupancy."""
    from attnbench.inspect.compile import compile_launch
    from attnbench.inspect.report import function_report
    from attnbench.kernels.triton_launch import LaunchQuery
    from attnbench.kernels.triton_slices import ops

    query = LaunchQuery(arch=arch, dtype=dtype, head_dim=head_dim, mask=TUNE_MASKS[0], seqlen=TUNE_SEQLEN,
                        heads_q=TUNE_HEADS[0], heads_kv=TUNE_HEADS[1],
                        passes=("forward",) if trial.pass_ == "forward" else ("backward",))
    config = _config(arch, head_dim, dtype, trial.pass_, trial.tiles)
    [launch] = [x for x in ops.declared_launches(query, config) if x.label == trial.pass_]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        f = function_report(launch, compile_launch(launch, arch))
    trial.registers, trial.spill_bytes, trial.blocks_per_sm = f.registers, f.spill_store_bytes, f.blocks_per_sm
    trial.shared_bytes = f.shared_bytes
    if f.blocks_per_sm == 0:
        trial.rejected = "does not fit on an SM"
    elif f.spill_store_bytes:
        trial.rejected = f"spills {f.spill_store_bytes} B"


def measure(arch: str, head_dim: int, dtype: str, trial: Trial) -> None:
    """Median time of the trial's kernel on the tuning masks (CUDA events, L2 flushed)."""
    import torch

    from attnbench.cases import Budget, torch_dtype
    from attnbench.kernels.triton_slices import ops
    from attnbench.masks import build_mask
    from attnbench.measure.timing import time_fn

    Hq, Hkv = TUNE_HEADS
    S, D = TUNE_SEQLEN, head_dim
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, h, S, D, device="cuda", dtype=torch_dtype(dtype), generator=g)
                   for h in (Hq, Hkv, Hkv, Hq))
    budget = Budget(warmup_seconds=0.05, measure_seconds=0.2, min_repeats=5, max_repeats=50)
    config = _config(arch, head_dim, dtype, trial.pass_, trial.tiles)
    trial.ms = {}
    for name in TUNE_MASKS:
        plan = ops.make_plan(build_mask(name, S, {}), Hq, Hkv, "cuda", config)
        out, lse = ops.forward_outputs(q)
        forward = ops.forward_launch(q, k, v, out, lse, plan, D ** -0.5)
        forward()
        if trial.pass_ == "forward":
            launches = [forward]
        else:
            backward, _ = ops.backward_launches(do, q, k, v, out, lse, plan, D ** -0.5)
            for launch in backward:
                launch()
            launches = [x for x in backward if x.label in ("dkdv", "dkdv_reduce", "dq")]
            if trial.pass_ == "dq":
                launches = [x for x in launches if x.label == "dq"]

        def run():
            for launch in launches:
                launch()

        samples = time_fn(run, device="cuda", budget=budget, first_call=False)
        trial.ms[name] = samples.median_s * 1e3


def tune(*, arch: str, head_dims: list[int], dtypes: list[str], passes: list[str], dry_run: bool,
         progress=None) -> list[Trial]:
    unknown = sorted(set(passes) - set(PASSES))
    if unknown:
        raise UserError(f"--passes: unknown {', '.join(unknown)} (use {', '.join(PASSES)})")
    trials = []
    for head_dim in head_dims:
        for dtype in dtypes:
            for pass_ in passes:
                for tiles in candidates(arch, head_dim, dtype, pass_):
                    trial = Trial(pass_, tiles)
                    screen(arch, head_dim, dtype, trial)
                    if not dry_run and trial.rejected is None:
                        measure(arch, head_dim, dtype, trial)
                    trials.append(trial)
                    if progress:
                        progress(head_dim, dtype, trial)
    return trials


TUNABLE = ("triton_slices", "triton_slices_det")


def run_tune(kernel: str, *, arch: str | None, head_dims: list[int], dtypes: list[str], passes: list[str],
             dry_run: bool, command: str, progress=None) -> tuple[str, list[Trial], list[dict]]:
    """Check the options, sweep, and return (arch, every trial, the best row per key)."""
    import torch

    from attnbench.cases import canonical_dtype
    from attnbench.kernels.triton_launch import ARCHS, arch_of_capability

    if kernel not in TUNABLE:
        raise UserError(f"tune knows {', '.join(TUNABLE)} (got {kernel!r})")
    try:
        dtypes = [canonical_dtype(d) for d in dtypes]
    except ValueError as exc:
        raise UserError(f"--dtypes: {exc}") from None
    bad = [h for h in head_dims if h not in (16, 32, 64, 128, 256)]
    if bad:
        raise UserError(f"--head-dims: {bad[0]} not supported (16, 32, 64, 128, 256)")
    machine = "offline compile (no GPU)"
    if dry_run:
        arch = arch or "sm90"
        if arch not in ARCHS:
            raise UserError(f"--arch: unknown {arch!r}; use one of {', '.join(ARCHS)}")
    else:
        if not torch.cuda.is_available():
            raise UserError("tune times the kernels: it needs a CUDA device (--dry-run compiles and screens without one)")
        if arch is not None:
            raise UserError("--arch is for --dry-run; a real sweep tunes for this GPU")
        arch = arch_of_capability(*torch.cuda.get_device_capability())
        machine = torch.cuda.get_device_name()
    trials_by_key: dict[tuple[int, str], list[Trial]] = {}
    for head_dim in head_dims:
        for dtype in dtypes:
            trials_by_key[(head_dim, dtype)] = tune(arch=arch, head_dims=[head_dim], dtypes=[dtype], passes=passes,
                                                     dry_run=dry_run, progress=progress)
    trials = [t for ts in trials_by_key.values() for t in ts]
    rows = [] if dry_run else best_rows(arch, machine, command, trials_by_key)
    return arch, trials, rows


def best_rows(arch: str, machine: str, command: str, results: dict[tuple[int, str], list[Trial]]) -> list[dict]:
    import triton

    rows = []
    date = _dt.date.today().isoformat()
    for (head_dim, dtype), trials in results.items():
        for pass_ in PASSES:
            timed = [t for t in trials if t.pass_ == pass_ and t.ms]
            if not timed:
                continue
            best = min(timed, key=lambda t: t.score)
            t = best.tiles
            rows.append({"arch": arch, "head_dim": head_dim, "dtype": dtype, "pass": pass_, "block_m": t.block_m,
                         "block_n": t.block_n, "num_warps": t.num_warps, "stages": t.stages,
                         "part_stages": t.part_stages, "ms": best.ms, "machine": machine, "date": date,
                         "triton": triton.__version__, "command": command})
    return rows


def write_table(rows: list[dict], path: Path = TABLE) -> None:
    """Merge ``rows`` into the table at ``path`` (a row per (arch, head dim, dtype, pass))."""
    existing = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    key = ("arch", "head_dim", "dtype", "pass")
    replaced = {tuple(r[k] for k in key) for r in rows}
    merged = [r for r in existing if tuple(r[k] for k in key) not in replaced] + rows
    merged.sort(key=lambda r: tuple(str(r[k]) for k in key))
    path.write_text(json.dumps({"rows": merged}, indent=2) + "\n")


def trial_dict(trial: Trial) -> dict:
    return {**asdict(trial), "tiles": asdict(trial.tiles), "pass": trial.pass_}
