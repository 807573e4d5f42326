"""What a suite will do before it runs: per case, run / unsupported / skipped, and time."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.cases import DTYPES, Case
from attnbench.errors import MaskTooLarge
from attnbench.results.schema import Prediction


@dataclass
class PlannedCase:
    case: Case
    action: str  # "run", "unsupported", "skipped"
    reason: str | None
    prediction: Prediction | None
    #: where the predicted seconds go (kernel cases that would run); see measure.predict.CaseCost
    cost: object | None = None
    #: the prediction over budget or memory that makes it `skipped` (measure.predict.Overrun)
    overrun: object | None = None


def plan_case(case: Case, matmul_tflops: dict[str, float], cp_launch=None) -> PlannedCase:
    if case.cp is not None:
        return plan_cp_case(case, matmul_tflops, cp_launch)
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS, build_mask
    from attnbench.measure.memory import available_memory_bytes
    from attnbench.measure.predict import case_cost, overrun, predict

    kernel = KERNELS.get(case.kernel)
    why_not = kernel.unsupported_reason(case)
    if why_not:
        return PlannedCase(case, "unsupported", why_not, None)
    heads = case.shape.heads_q if MASKS.get(case.mask.name).dynamic else 1
    try:
        mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params, heads=heads)
    except MaskTooLarge as exc:
        return PlannedCase(case, "skipped", str(exc), None)
    prediction = predict(case, kernel, mask, matmul_tflops, available_memory_bytes(case.device))
    over = overrun(case, prediction)
    if over is not None:
        return PlannedCase(case, "skipped", over.reason(), prediction, overrun=over)
    return PlannedCase(case, "run", None, prediction, cost=case_cost(case, kernel, mask, matmul_tflops))


def plan_cp_case(case: Case, matmul_tflops: dict[str, float], cp_launch=None) -> PlannedCase:
    """A CP case: the method's support check, then placement (GPUs per node), then time."""
    from attnbench.cp.execute import method_problem, predict_cp, with_check_rows, with_placement
    from attnbench.cp.launch import LaunchOptions, placement_problem

    options = cp_launch or LaunchOptions()
    case = with_placement(case, options)
    why_not = method_problem(case)
    if why_not:
        return PlannedCase(case, "unsupported", why_not, None)
    skip = placement_problem(case, options)
    if skip:
        return PlannedCase(case, "skipped", skip, None)
    case = with_check_rows(case, matmul_tflops)  # the case says whether its check is sampled
    return PlannedCase(case, "run", None, predict_cp(case, matmul_tflops))


def plan_suite(suite, cp_launch=None) -> list[PlannedCase]:
    from attnbench.measure.device import calibrate_device

    cases = list(suite.cases)
    if not cases:
        return []
    from attnbench.measure.threads import choose_threads, pinned_threads

    with pinned_threads(choose_threads(None, cases[0].device).count):  # as the run would measure
        calibration = calibrate_device(cases[0].device, DTYPES)
    return [plan_case(case, calibration.matmul_tflops, cp_launch) for case in cases]


def planned_seconds(plan: list[PlannedCase]) -> list[float]:
    """Predicted seconds of each planned case in run order (measure.predict.sequence_seconds):
    a reference or a compilation that an earlier case paid is not paid again."""
    from attnbench.measure.predict import sequence_seconds

    costs = []
    for p in plan:
        if p.action != "run":
            costs.append(None)
        elif p.cost is not None:
            costs.append(p.cost)
        else:  # a CP case: its own prediction (launch included)
            costs.append(p.prediction.case_seconds if p.prediction else None)
    return sequence_seconds([p.case for p in plan], costs)


def predicted_run_seconds(plan: list[PlannedCase]) -> tuple[float, float]:
    """(start-up seconds, seconds of the cases) for a run of `plan`."""
    from attnbench.measure.predict import startup_seconds

    return startup_seconds([p.case for p in plan if p.action == "run"]), sum(planned_seconds(plan))
