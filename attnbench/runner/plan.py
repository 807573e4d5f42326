"""What a suite will do before it runs: per case, run / unsupported / skipped, and time."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.cases import DTYPES, Case
from attnbench.results.schema import Prediction


@dataclass
class PlannedCase:
    case: Case
    action: str  # "run", "unsupported", "skipped"
    reason: str | None
    prediction: Prediction | None


def plan_case(case: Case, matmul_tflops: dict[str, float]) -> PlannedCase:
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS, build_mask
    from attnbench.measure.memory import available_memory_bytes
    from attnbench.runner.predict import predict, skip_reason

    kernel = KERNELS.get(case.kernel)
    why_not = kernel.unsupported_reason(case)
    if why_not:
        return PlannedCase(case, "unsupported", why_not, None)
    heads = case.shape.heads_q if MASKS.get(case.mask.name).dynamic else 1
    mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params, heads=heads)
    prediction = predict(case, kernel, mask, matmul_tflops, available_memory_bytes(case.device))
    skip = skip_reason(case, prediction)
    return PlannedCase(case, "skipped" if skip else "run", skip, prediction)


def plan_suite(suite) -> list[PlannedCase]:
    from attnbench.measure.device import calibrate_device

    cases = list(suite.cases)
    if not cases:
        return []
    calibration = calibrate_device(cases[0].device, DTYPES)
    return [plan_case(case, calibration.matmul_tflops) for case in cases]
