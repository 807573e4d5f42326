"""One case in, one record out, whatever happens.

`execute_case` never raises for a failing case: unsupported combinations, predicted
overruns, out-of-memory, exceptions, wrong or implausible numbers all become a record
with a status and a reason. Only KeyboardInterrupt goes through. It takes a serialisable
`Case` and returns a serialisable `Record`, so a worker process can run it.
"""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from attnbench.cases import Case, Pass
from attnbench.errors import Unsupported, UserError, first_line, is_out_of_memory  # noqa: F401 (re-exported)
from attnbench.inputs import CaseTensors, make_tensors
from attnbench.measure.predict import predict, skip_reason
from attnbench.results.schema import Accuracy, Memory, Prediction, Record, Status, TensorAccuracy, Timing
from attnbench.results.store import utc_now
from attnbench.tolerance import tolerances


@dataclass
class CaseContext:
    """What consecutive cases share: calibration, and inputs and reference of the same problem."""

    run_id: str
    matmul_tflops: dict[str, float] = field(default_factory=dict)
    peak_tflops: dict[str, float] = field(default_factory=dict)
    #: inputs for which some case of the run needs gradients: their reference gets them at once
    grad_inputs: set = field(default_factory=set)
    #: how context-parallel cases start their ranks (attnbench.cp.launch.LaunchOptions; None: one node)
    cp_launch: Any = None
    _tensors_key: Any = None
    _tensors: CaseTensors | None = None
    _reference_key: Any = None
    _reference: Any = None

    def tensors(self, case: Case) -> CaseTensors:
        if self._tensors_key != case.inputs_key():
            self._tensors = self._reference = self._reference_key = None
            gc.collect()
            self._tensors = make_tensors(case)
            self._tensors_key = case.inputs_key()
        return self._tensors  # type: ignore[return-value]

    def reference(self, case: Case, mask, tensors: CaseTensors, scale: float):
        from attnbench.measure.reference import reference_attention

        with_grads = case.pass_.needs_grad or case.inputs_key() in self.grad_inputs
        key = (case.inputs_key(), with_grads)
        cached = self._reference
        if cached is not None and self._reference_key[0] == key[0] and (self._reference_key[1] or not case.pass_.needs_grad):
            return cached
        self._reference = None
        grad_out = tensors.grad_out if with_grads else None
        self._reference = reference_attention(tensors.q, tensors.k, tensors.v, mask, grad_out=grad_out, scale=scale)
        self._reference_key = key
        return self._reference


def execute_case(case: Case, ctx: CaseContext) -> Record:
    started_at, start = utc_now(), time.perf_counter()
    fields: dict[str, Any] = {}
    try:
        status, reason = _run(case, ctx, fields)
        detail = None
    except KeyboardInterrupt:
        raise
    except Unsupported as exc:
        status, reason, detail = Status.unsupported, str(exc), None
    except UserError as exc:
        status, reason, detail = Status.error, str(exc), None
    except Exception as exc:  # a failing case never stops the suite
        status = Status.oom if is_out_of_memory(exc) else Status.error
        reason, detail = first_line(exc), traceback.format_exc()[-4000:]
    finally:
        if case.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return Record.for_case(
        case,
        run_id=ctx.run_id,
        status=status,
        reason=reason,
        started_at=started_at,
        duration_s=time.perf_counter() - start,
        detail=detail,
        **fields,
    )


def _run(case: Case, ctx: CaseContext, fields: dict[str, Any]) -> tuple[Status, str | None]:
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS, build_mask
    from attnbench.measure.accuracy import compare_to_reference
    from attnbench.measure.flops import attention_flops, tflops_per_second
    from attnbench.measure.memory import available_memory_bytes, measure_peak_memory
    from attnbench.measure.timing import time_fn

    kernel = KERNELS.get(case.kernel)
    why_not = kernel.unsupported_reason(case)
    if why_not:
        return Status.unsupported, why_not

    s = case.shape
    heads = s.heads_q if MASKS.get(case.mask.name).dynamic else 1
    mask = build_mask(case.mask.name, s.seqlen, case.mask.params, heads=heads)
    fields["mask"] = mask.info()
    flops = attention_flops(batch=s.batch, heads_q=s.heads_q, head_dim=s.head_dim, area=mask.area, pass_=case.pass_)
    fields["flops"] = flops

    prediction: Prediction = predict(case, kernel, mask, ctx.matmul_tflops, available_memory_bytes(case.device))
    fields["prediction"] = prediction
    skip = skip_reason(case, prediction)
    if skip:
        return Status.skipped, skip

    tensors = ctx.tensors(case)
    inputs = tensors.for_pass(case.pass_.needs_grad)
    run = kernel.prepare(inputs, mask)
    grads_of = (inputs.q, inputs.k, inputs.v)

    def forward_backward():
        return torch.autograd.grad(run().out, grads_of, tensors.grad_out)

    # first call: compiles where the kernel compiles, and gives the numbers to check
    result = run()
    actual = {"out": result.out, "lse": result.lse}
    if case.pass_.needs_grad:
        actual.update(zip(("dq", "dk", "dv"), torch.autograd.grad(result.out, grads_of, tensors.grad_out)))
    status, reason = Status.ok, None
    if case.check_accuracy:
        reference = ctx.reference(case, mask, tensors, inputs.scale)
        errors = compare_to_reference({k: v for k, v in actual.items() if v is not None}, reference)
        limits = tolerances(case.device, case.dtype, s.head_dim)
        tensors_report = {}
        for name, err in errors.items():
            tol = limits.get(name)
            ok = not err.has_nan and err.rel_l2 is not None and (tol is None or err.rel_l2 <= tol)
            tensors_report[name] = TensorAccuracy(
                max_abs=_finite(err.max_abs), rel_l2=_finite(err.rel_l2), tolerance=tol, has_nan=err.has_nan, ok=ok
            )
        accurate = all(t.ok for t in tensors_report.values())
        fields["accuracy"] = Accuracy(reference=_reference_label(case.device), tensors=tensors_report, ok=accurate)
        if not accurate:
            bad = [n for n, t in tensors_report.items() if not t.ok]
            worst = bad[0]
            t = tensors_report[worst]
            what = "NaN" if t.has_nan else f"relative L2 error {t.rel_l2:.3g} > tolerance {t.tolerance:.3g}"
            status, reason = Status.invalid, f"{', '.join(bad)} wrong against the reference: {worst} {what}"
    del result, actual

    if case.pass_ is Pass.forward:
        with torch.no_grad():
            samples = time_fn(run, device=case.device, budget=case.budget, first_call=False)
        one_iteration: Callable[[], Any] = run
    elif case.pass_ is Pass.backward:
        samples = time_fn(
            lambda out: torch.autograd.grad(out, grads_of, tensors.grad_out),
            setup=lambda: run().out,
            device=case.device,
            budget=case.budget,
            first_call=False,
        )
        one_iteration = forward_backward
    else:
        samples = time_fn(forward_backward, device=case.device, budget=case.budget, first_call=False)
        one_iteration = forward_backward
    fields["timing"] = Timing(
        method=samples.method,
        warmup=samples.warmup,
        repeats=len(samples.times_s),
        median_s=samples.median_s,
        p20_s=samples.p20_s,
        p80_s=samples.p80_s,
        samples_s=samples.times_s,
    )
    if case.device.startswith("cuda"):  # clocks and throttle reasons right after the timed loop
        from attnbench.measure.environment import nvml_snapshot

        fields["nvml"] = nvml_snapshot()
    memory = measure_peak_memory(one_iteration, device=case.device)
    fields["memory"] = Memory(peak_bytes=memory.peak_bytes, method=memory.method)

    rate = tflops_per_second(flops, samples.median_s)
    fields["tflops"] = rate
    peak = ctx.peak_tflops.get(case.dtype)
    if status is Status.ok and rate is not None and peak is not None and rate > peak:
        status, reason = Status.invalid, f"{rate:.1f} TFLOPs/s is above this device's peak of {peak:.1f}: impossible"
    return status, reason


def _finite(x: float | None) -> float | None:
    return x if x is not None and x == x and abs(x) != float("inf") else None


def _reference_label(device: str) -> str:
    return "float32, query chunks, on the GPU" if device.startswith("cuda") else "float64, query chunks, on the CPU"
