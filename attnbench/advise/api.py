"""The two questions the CLI asks, from already parsed values: advise and check."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from attnbench.advise.calibrate import calibration_from
from attnbench.advise.check import CheckReport, check_run, pooled, run_agreement
from attnbench.advise.compute import ComputeModel, from_figures, from_run
from attnbench.advise.network import load_profile
from attnbench.advise.predict import Predictor
from attnbench.advise.rank import Advice, Question, advise
from attnbench.errors import UserError

DEFAULT_NETWORK = "h100-nvlink-ib400"
DEFAULT_FIGURES = "h100-fa3"
#: the longest sequence `advise` models: its layouts and pair areas grow with the sequence's
#: documents (causal_document on 64 GPUs: 1M tokens 6 s, 16M 24 s and 0.5 GB, 64M 79 s and
#: 1.0 GB here; at 1G it passed 12 GB in 10 minutes)
MAX_SEQLEN = 1 << 26


def compute_model(kernel_run: Optional[str], figures: Optional[str], root: Path) -> ComputeModel:
    if kernel_run and figures:
        raise UserError("give --kernel-run (measured) or --kernel-figures (published), not both")
    if kernel_run:
        from attnbench.results.store import load_run, resolve_run

        return from_run(load_run(resolve_run(kernel_run, root)))
    return from_figures(figures or DEFAULT_FIGURES)


def pick_kernel(compute: ComputeModel, kernel: Optional[str]) -> str:
    """The local kernel to price: the one asked for, else the figures' only kernel (flex when
    a run measured several)."""
    if kernel:
        if kernel not in compute.kernels:
            raise UserError(f"--kernel {kernel!r}: the compute figures have {', '.join(compute.kernels)}")
        return kernel
    if len(compute.kernels) == 1:
        return compute.kernels[0]
    if "flex" in compute.kernels:
        return "flex"
    raise UserError(f"the compute figures have several kernels ({', '.join(compute.kernels)}); choose one with --kernel")


def advise_question(*, mask: str, mask_params: dict, seqlen: int, gpus: int, gpus_per_node: int, heads: tuple[int, int],
                    head_dim: int, dtype: str, kernel: Optional[str], kernel_run: Optional[str], figures: Optional[str],
                    network: Optional[str], memory_bytes: Optional[int], root: Path) -> Advice:
    from attnbench.cases import canonical_dtype
    from attnbench.masks import MASKS

    if gpus < 1 or gpus_per_node < 1:
        raise UserError("--gpus and --gpus-per-node must be >= 1")
    if seqlen > MAX_SEQLEN:
        raise UserError(f"--seqlen {seqlen}: advise models sequences up to {MAX_SEQLEN >> 20}M tokens "
                        "(its per-rank layouts and pair areas grow with the sequence)")
    if gpus % gpus_per_node and gpus > gpus_per_node:
        raise UserError(f"--gpus {gpus} is not a multiple of --gpus-per-node {gpus_per_node}")
    if heads[0] < 1 or heads[1] < 1 or heads[0] % heads[1]:
        raise UserError(f"--heads {heads[0]}:{heads[1]}: query heads must be a positive multiple of the kv heads")
    if head_dim < 1:
        raise UserError("--head-dim must be >= 1")
    try:
        dtype = canonical_dtype(dtype)
    except ValueError as exc:
        raise UserError(f"--dtype: {exc}") from None
    family = MASKS.get(mask)  # unknown name: "did you mean"
    if family.dynamic:
        raise UserError(f"mask {mask!r} is dynamic (per head); CP methods run the static masks")
    compute = compute_model(kernel_run, figures, root)
    profile = load_profile(network or DEFAULT_NETWORK)
    question = Question(mask=mask, mask_params=mask_params, seqlen=seqlen, gpus=gpus, gpus_per_node=min(gpus_per_node, gpus),
                        heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim, dtype=dtype,
                        kernel=pick_kernel(compute, kernel), device=compute.device)
    predictor = Predictor(compute, profile, question.gpus_per_node)
    advice = advise(question, predictor, memory_bytes or compute.memory_bytes)
    if all(o.status == "cannot run" for o in advice.options if o.status != "not modelled"):
        first = next(o for o in advice.options if o.status == "cannot run")
        raise UserError(f"no CP method can run {mask} at {seqlen} tokens on {gpus} GPUs "
                        f"(e.g. {first.label}: {first.reason})")
    return advice


def check(run_refs, *, kernel_run: Optional[str], network: Optional[str], root: Path,
          calibrate: Optional[str] = None) -> CheckReport:
    """Predict every case of a CP run; with ``calibrate`` (another CP run on this machine),
    scaled per world size by that run's measured / predicted compute and communication.
    Several runs (of one suite): each checked, and the median of their measurements per case
    (attnbench.advise.check.pooled)."""
    refs = [run_refs] if isinstance(run_refs, str) else list(run_refs)
    if not kernel_run or not network:
        raise UserError("--check needs --kernel-run RUN (the CP suite's local kernel measured alone, e.g. "
                        "`attnbench run suites/cp_local.yaml`) and --network PROFILE (`attnbench netbench`) "
                        "measured on the same machine")
    compute = compute_model(kernel_run, None, root)
    profile = load_profile(network)
    runs = [_cp_run(ref, root, profile) for ref in refs]
    ids = [run.info.run_id for run in runs]
    if len(set(ids)) < len(ids):
        raise UserError(f"--check names run {next(i for i in ids if ids.count(i) > 1)} twice")
    calibration = None
    if calibrate:
        reference = _cp_run(calibrate, root, profile)
        if reference.info.run_id in ids:
            raise UserError("--calibrate names a run being checked: calibrate on another run of the suite "
                            "(a check against its own fit says nothing)")
        fitted_on = check_run(reference, _predictors(compute, profile, None))
        calibration = calibration_from(fitted_on)
    reports = [check_run(run, _predictors(compute, profile, calibration), calibration=calibration) for run in runs]
    report = reports[0] if len(reports) == 1 else pooled(reports)
    if calibrate:
        report.reference = run_agreement(report, fitted_on)
    return report


def _cp_run(ref: str, root: Path, profile):
    from attnbench.results.store import load_run, resolve_run

    run = load_run(resolve_run(ref, root))
    cp = [r for r in run.records if r.cp is not None]
    if not cp:
        raise UserError(f"{run.path}: no CP records to check (a run of a CP suite, e.g. suites/cp.yaml)")
    backends = {r.cp.backend for r in cp}
    if backends and profile.backend not in backends:
        raise UserError(f"run {run.info.run_id} used {', '.join(sorted(backends))}; network profile "
                        f"{profile.name!r} is {profile.backend}")
    return run


def _predictors(compute, profile, calibration):
    predictors: dict = {}

    def predictor_for(world: int, ranks_per_node: int) -> Predictor:
        if ranks_per_node not in predictors:
            predictors[ranks_per_node] = Predictor(compute, profile, ranks_per_node, calibration)
        return predictors[ranks_per_node]

    return predictor_for
