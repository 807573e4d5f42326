"""Predict a case's time and memory before attempting it, from FLOPs and calibration.

The estimate is deliberately simple: the work the kernel does (the whole square for
dense kernels, the mask's area for sparse ones) at a fraction of this device's measured
matmul rate, plus what a case costs besides its timed iterations (:class:`CaseCost`): the
first call's compilation (:attr:`Kernel.compile_seconds`), the float64 accuracy reference,
and a fixed per-case overhead (inputs, memory measurement, the record). A run adds the
start of its worker process (:data:`WORKER_START_S`). The per-case prediction decides
whether to attempt the case at all; :func:`sequence_seconds` gives the durations of the
cases as a run meets them (a reference or a compiled graph is paid once, not per case),
for `validate`'s total and the run's ETA.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.cases import Case
from attnbench.results.schema import Prediction

#: fraction of the matmul rate an attention kernel's forward reaches
ATTENTION_EFFICIENCY = {"cpu": 0.1, "cuda": 0.2}
#: the reference's forward runs at about this fraction of the float32 matmul rate (CPU: float64,
#: measured 3.1-3.9% at 512 and 1K tokens); with gradients it takes REFERENCE_GRAD_FACTOR as long
REFERENCE_EFFICIENCY = {"cpu": 0.035, "cuda": 0.2}
REFERENCE_GRAD_FACTOR = 1.6
#: runs beyond the timed ones: first call (compile), accuracy check, memory measurement
EXTRA_RUNS = 3
#: the timer's estimate of one iteration: up to this many iterations, stopping after ESTIMATE_SECONDS
ESTIMATE_ITERATIONS, ESTIMATE_SECONDS = 5, 0.1
#: seconds one kernel call costs whatever its size (Python, dispatch, launches)
CALL_OVERHEAD_S = {"cpu": 1e-3, "cuda": 1e-4}
#: seconds a case costs besides its iterations: inputs, mask conversion, two garbage
#: collections around the memory measurement (0.1 s each on CPU), the record. CPU: measured
#: 0.3 s per sdpa case of smoke on 2 loaded cores; CUDA: not measured yet (an estimate)
CASE_OVERHEAD_S = {"cpu": 0.35, "cuda": 0.3}
#: seconds to start the run's worker process: spawn, import torch and attnbench, calibrate.
#: CPU: measured 9-10 s on 2 cores at load 11 (4-5 s of it CPU time); CUDA: not measured yet
WORKER_START_S = {"cpu": 8.0, "cuda": 15.0}


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _device(case: Case) -> str:
    return case.device.split(":")[0]


@dataclass(frozen=True)
class CaseCost:
    """Predicted seconds of one case, by where they go."""

    per_iteration: float  # one timed iteration
    timed: float  # warm-up, estimate, timed and extra iterations (and backward's untimed forwards)
    reference: float  # the accuracy reference, forward only (shared by the cases on the same inputs)
    compile: float  # the first call's compilation (shared by the cases of one graph)
    overhead: float  # fixed per-case cost
    with_grads: bool = False  # this case's reference needs gradients
    compiler_start: float = 0.0  # the compiler's start, paid by the first compiling case of a run

    @property
    def total(self) -> float:
        return self.timed + self.reference_seconds(self.with_grads) + self.compile + self.overhead

    def reference_seconds(self, with_grads: bool) -> float:
        return self.reference * (REFERENCE_GRAD_FACTOR if with_grads else 1.0)


def case_cost(case: Case, kernel, mask, matmul_tflops: dict[str, float]) -> CaseCost:
    s = case.shape
    device = _device(case)
    rate = max(matmul_tflops.get(case.dtype) or matmul_tflops.get("float32") or 0.01, 1e-3) * 1e12
    forward = 4.0 * s.batch * s.heads_q * s.head_dim * kernel.work_area(mask) / (rate * ATTENTION_EFFICIENCY.get(device, 0.1))
    call = CALL_OVERHEAD_S.get(device, 1e-3)
    per_iteration = forward * case.pass_.flop_factor + call
    # backward is timed after an untimed forward each iteration
    setup = forward + call if case.pass_.value == "backward" else 0.0
    b = case.budget
    repeats = max(b.min_repeats, min(b.max_repeats, b.measure_seconds / per_iteration))
    warmup = b.warmup_seconds if b.warmup_seconds > 0 else 0.0
    estimate = min(ESTIMATE_ITERATIONS * per_iteration, ESTIMATE_SECONDS + per_iteration)
    timed = warmup + estimate + repeats * per_iteration + (repeats + EXTRA_RUNS) * setup + EXTRA_RUNS * per_iteration
    reference = 0.0
    if case.check_accuracy:
        ref_rate = (matmul_tflops.get("float32") or 0.01) * 1e12 * REFERENCE_EFFICIENCY.get(device, 0.05)
        reference = 4.0 * s.batch * s.heads_q * s.head_dim * float(s.seqlen) ** 2 / ref_rate
    compile_s = (getattr(kernel, "compile_seconds", None) or {}).get(device, 0.0)
    start_s = (getattr(kernel, "compiler_start_seconds", None) or {}).get(device, 0.0)
    return CaseCost(per_iteration, timed, reference, compile_s, CASE_OVERHEAD_S.get(device, 0.35),
                    with_grads=case.pass_.needs_grad, compiler_start=start_s)


def predict(case: Case, kernel, mask, matmul_tflops: dict[str, float], free_bytes: int | None) -> Prediction:
    """The case on its own (its reference and compilation included): what decides whether to attempt it."""
    s = case.shape
    cost = case_cost(case, kernel, mask, matmul_tflops)
    element = dtype_bytes(case.dtype)
    tokens = s.batch * s.seqlen * s.head_dim
    tensors = tokens * (2 * s.heads_q + 2 * s.heads_kv) * element  # q, out, k, v
    if case.pass_.needs_grad:
        tensors += tokens * (2 * s.heads_q + 2 * s.heads_kv) * element  # dO, dq, dk, dv
    need = tensors + kernel.extra_memory_bytes(s.batch, s.heads_q, s.seqlen, s.head_dim)
    if case.pass_.needs_grad:
        need += kernel.extra_memory_bytes(s.batch, s.heads_q, s.seqlen, s.head_dim)  # saved for backward
    return Prediction(
        seconds_per_iteration=cost.per_iteration,
        case_seconds=cost.total,
        bytes=int(need),
        free_bytes=free_bytes,
    )


def compile_key(case: Case) -> tuple:
    """What a compiled kernel specialises on (a new one compiles again): shape, dtype, pass, mask family."""
    return (case.kernel, case.shape, case.dtype, case.pass_, case.mask.name)


def sequence_seconds(cases: list[Case], costs: list[CaseCost | float | None]) -> list[float]:
    """Predicted seconds of each case in run order: a `CaseCost` pays its reference only when the
    inputs differ from the case before (the reference is kept for consecutive cases on the same
    inputs), its compilation once per :func:`compile_key` and its compiler's start once per
    kernel; a float is taken as it is (CP cases); None (not attempted) costs nothing."""
    out: list[float] = []
    compiled: set = set()
    started: set = set()  # kernels whose compiler has started in this run
    previous_inputs = None
    # as the runner does: inputs that some case needs gradients of get them with the first reference
    grad_inputs = {case.inputs_key() for case in cases if case.pass_.needs_grad and case.check_accuracy}
    for case, cost in zip(cases, costs):
        if cost is None or isinstance(cost, (int, float)):
            out.append(float(cost or 0.0))
            continue
        seconds = cost.timed + cost.overhead
        if case.inputs_key() != previous_inputs:
            seconds += cost.reference_seconds(case.inputs_key() in grad_inputs)
        previous_inputs = case.inputs_key()
        if compile_key(case) not in compiled:
            seconds += cost.compile
            if cost.compiler_start and case.kernel not in started:
                seconds += cost.compiler_start
                started.add(case.kernel)
            compiled.add(compile_key(case))
        out.append(seconds)
    return out


def startup_seconds(cases: list[Case]) -> float:
    """Seconds before the first case: the worker's start (kernel cases), once per run."""
    kernel_cases = [case for case in cases if case.cp is None]
    if not kernel_cases:
        return 0.0
    return WORKER_START_S.get(_device(kernel_cases[0]), 8.0)


@dataclass(frozen=True)
class Overrun:
    """A case predicted over what it may use: skipped, not attempted."""

    resource: str  # "time" (seconds over budget.case_seconds) or "memory" (bytes over the free memory)
    predicted: float
    limit: float

    def reason(self) -> str:
        return self.describe(self.predicted, self.predicted)

    def describe(self, low: float, high: float) -> str:
        """The reason with the predicted value as a range (the cases of one group)."""
        if self.resource == "time":
            value = f"{low:.0f} s" if round(low) == round(high) else f"{low:.0f}-{high:.0f} s"
            return (f"predicted {value}, over the case budget of {self.limit:.0f} s "
                    "(raise budget.case_seconds to attempt it)")
        gib = 2**30
        value = f"{low / gib:.1f} GiB" if round(low / gib, 1) == round(high / gib, 1) else f"{low / gib:.1f}-{high / gib:.1f} GiB"
        return f"predicted {value}, over the {self.limit / gib:.1f} GiB free on the device"


def overrun(case: Case, prediction: Prediction) -> Overrun | None:
    if prediction.case_seconds is not None and prediction.case_seconds > case.budget.case_seconds:
        return Overrun("time", prediction.case_seconds, case.budget.case_seconds)
    if prediction.free_bytes is not None and prediction.bytes is not None and prediction.bytes > 0.9 * prediction.free_bytes:
        return Overrun("memory", float(prediction.bytes), float(prediction.free_bytes))
    return None


def skip_reason(case: Case, prediction: Prediction) -> str | None:
    found = overrun(case, prediction)
    return found.reason() if found else None
