"""Predict a case's time and memory before attempting it, from FLOPs and calibration.

The estimate is deliberately simple: the work the kernel does (the whole square for
dense kernels, the mask's area for sparse ones) at a fraction of this device's measured
matmul rate, and the bytes of inputs, outputs, gradients, the kernel's own buffers and
the accuracy reference. It decides only whether to attempt the case at all.
"""

from __future__ import annotations

from attnbench.cases import Case
from attnbench.results.schema import Prediction

#: fraction of the matmul rate an attention kernel reaches (conservative: over-predicts)
ATTENTION_EFFICIENCY = {"cpu": 0.1, "cuda": 0.2}
#: the float64 reference runs at about this fraction of the float32 matmul rate on CPU
REFERENCE_EFFICIENCY = {"cpu": 0.05, "cuda": 0.2}
#: runs beyond the timed ones: first call (compile), accuracy check, memory measurement
EXTRA_RUNS = 3


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def predict(case: Case, kernel, mask, matmul_tflops: dict[str, float], free_bytes: int | None) -> Prediction:
    s = case.shape
    device = case.device.split(":")[0]
    rate = max(matmul_tflops.get(case.dtype) or matmul_tflops.get("float32") or 0.01, 1e-3) * 1e12
    work = 4.0 * s.batch * s.heads_q * s.head_dim * kernel.work_area(mask) * case.pass_.flop_factor
    per_iteration = work / (rate * ATTENTION_EFFICIENCY.get(device, 0.1))
    # backward is timed after an untimed forward each iteration
    setup = 4.0 * s.batch * s.heads_q * s.head_dim * kernel.work_area(mask) / (rate * ATTENTION_EFFICIENCY.get(device, 0.1))
    if case.pass_.value != "backward":
        setup = 0.0
    timed = case.budget.warmup_seconds + max(case.budget.measure_seconds, case.budget.min_repeats * per_iteration)
    timed += (case.budget.min_repeats + EXTRA_RUNS) * setup + EXTRA_RUNS * per_iteration
    reference = 0.0
    if case.check_accuracy:
        ref_rate = (matmul_tflops.get("float32") or 0.01) * 1e12 * REFERENCE_EFFICIENCY.get(device, 0.05)
        ref_work = 4.0 * s.batch * s.heads_q * s.head_dim * float(s.seqlen) ** 2 * (3.5 if case.pass_.needs_grad else 1.0)
        reference = ref_work / ref_rate

    element = dtype_bytes(case.dtype)
    tokens = s.batch * s.seqlen * s.head_dim
    tensors = tokens * (2 * s.heads_q + 2 * s.heads_kv) * element  # q, out, k, v
    if case.pass_.needs_grad:
        tensors += tokens * (2 * s.heads_q + 2 * s.heads_kv) * element  # dO, dq, dk, dv
    need = tensors + kernel.extra_memory_bytes(s.batch, s.heads_q, s.seqlen, s.head_dim)
    if case.pass_.needs_grad:
        need += kernel.extra_memory_bytes(s.batch, s.heads_q, s.seqlen, s.head_dim)  # saved for backward
    return Prediction(
        seconds_per_iteration=per_iteration,
        case_seconds=timed + reference,
        bytes=int(need),
        free_bytes=free_bytes,
    )


def skip_reason(case: Case, prediction: Prediction) -> str | None:
    if prediction.case_seconds is not None and prediction.case_seconds > case.budget.case_seconds:
        return (
            f"predicted {prediction.case_seconds:.0f} s, over the case budget of {case.budget.case_seconds:.0f} s "
            "(raise budget.case_seconds to attempt it)"
        )
    if prediction.free_bytes is not None and prediction.bytes is not None and prediction.bytes > 0.9 * prediction.free_bytes:
        return (
            f"predicted {prediction.bytes / 2**30:.1f} GiB, over the {prediction.free_bytes / 2**30:.1f} GiB free "
            "on the device"
        )
    return None
