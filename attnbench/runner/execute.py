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
from attnbench.errors import MaskTooLarge, Unsupported, UserError, first_line, is_out_of_memory  # noqa: F401 (re-exported)
from attnbench.inputs import CaseTensors, make_tensors
from attnbench.measure.integrity import changed, fingerprints
from attnbench.measure.predict import predict, skip_reason
from attnbench.measure.timing import split_repeats
from attnbench.results.schema import (
    Accuracy,
    Memory,
    Prediction,
    Record,
    RoundTiming,
    Status,
    TensorAccuracy,
    TimedCallCheck,
    Timing,
)
from attnbench.results.store import utc_now
from attnbench.runner.rounds import Visit
from attnbench.tolerance import tolerances


@dataclass
class CaseContext:
    """What consecutive cases share: calibration, and inputs and reference of the same problem.

    The inputs are shared by every kernel of the same problem, so they are fingerprinted
    when made (measure.integrity) and checked whenever they are handed out again: a kernel
    that changed them in place never passes the change on to the next kernel, and the
    reference is always computed from untouched inputs, before any kernel sees them.
    """

    run_id: str
    matmul_tflops: dict[str, float] = field(default_factory=dict)
    peak_tflops: dict[str, float] = field(default_factory=dict)
    #: inputs for which some case of the run needs gradients: their reference gets them at once
    grad_inputs: set = field(default_factory=set)
    #: how context-parallel cases start their ranks (attnbench.cp.launch.LaunchOptions; None: one node)
    cp_launch: Any = None
    #: who watches the memory of a case (measure.memory.MemoryWatch; None: this process itself)
    memory_watch: Any = None
    #: kernels whose prepare already ran once in this process (one-time imports and set-up done)
    prepared_kernels: set = field(default_factory=set)
    #: the canary timed around every visit's timed loop (measure.canary.Canary; None: not measured)
    canary: Any = None
    _tensors_key: Any = None
    _tensors: CaseTensors | None = None
    _fingerprints: dict = field(default_factory=dict)
    _verified: bool = False
    _reference_key: Any = None
    _reference: Any = None

    def tensors(self, case: Case) -> CaseTensors:
        """The case's inputs, unchanged since they were made (made again if a kernel changed them)."""
        key = case.inputs_key()
        if self._tensors_key != key:
            self._tensors = self._reference = self._reference_key = None
            gc.collect()
        elif not self._verified and self.inputs_changed():
            self._tensors = None  # the reference was computed from them untouched: it stays
            gc.collect()
        if self._tensors is None:
            self._tensors = make_tensors(case)
            self._tensors_key = key
            self._fingerprints = fingerprints(_named(self._tensors))
        self._verified = False  # handed out: checked again before the next hand-out
        return self._tensors

    def probe_canary(self) -> list[float]:
        """The canary's samples now, or none where this context has no canary."""
        return self.canary.probe() if self.canary is not None else []

    def inputs_changed(self) -> list[str]:
        """Which of the shared inputs (q, k, v, grad_out) differ from when they were made."""
        if self._tensors is None:
            return []
        names = changed(_named(self._tensors), self._fingerprints)
        self._verified = not names
        return names

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


def _named(tensors: CaseTensors) -> dict[str, torch.Tensor]:
    return {"q": tensors.q, "k": tensors.k, "v": tensors.v, "grad_out": tensors.grad_out}


def execute_case(case: Case, ctx: CaseContext, visit: Visit | None = None) -> Record:
    """The record of one visit of `case` (runner.rounds; default: the first and only one)."""
    visit = visit or Visit()
    started_at, start = utc_now(), time.perf_counter()
    fields: dict[str, Any] = {}
    try:
        status, reason = (_first_visit if visit.round == 0 else _later_visit)(case, ctx, fields, visit)
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


@dataclass
class _Prepared:
    """A case ready to time: its kernel prepared on the shared inputs, the reference at hand."""

    kernel: Any
    mask: Any
    tensors: CaseTensors
    inputs: Any
    reference: Any
    limits: dict[str, float] | None


def _mask(case: Case, fields: dict[str, Any]):
    from attnbench.masks import MASKS, build_mask
    from attnbench.measure.flops import attention_flops

    s = case.shape
    heads = s.heads_q if MASKS.get(case.mask.name).dynamic else 1
    mask = build_mask(case.mask.name, s.seqlen, case.mask.params, heads=heads)
    fields["mask"] = mask.info()
    fields["flops"] = attention_flops(batch=s.batch, heads_q=s.heads_q, head_dim=s.head_dim, area=mask.area, pass_=case.pass_)
    return mask


def _inputs(case: Case, ctx: CaseContext, kernel, mask) -> _Prepared:
    tensors = ctx.tensors(case)
    inputs = tensors.for_pass(case.pass_.needs_grad)
    # the reference comes first, from inputs no kernel has seen yet
    reference = ctx.reference(case, mask, tensors, inputs.scale) if case.check_accuracy else None
    limits = tolerances(case.device, case.dtype, case.shape.head_dim) if reference is not None else None
    return _Prepared(kernel, mask, tensors, inputs, reference, limits)


class _Closures:
    """What is timed for the case's pass, and one whole iteration (for the memory measurement)."""

    def __init__(self, case: Case, run: Callable[[], Any], tensors: CaseTensors, inputs) -> None:
        grads_of = (inputs.q, inputs.k, inputs.v)
        self.pass_ = case.pass_

        def forward_backward():
            result = run()
            return result, torch.autograd.grad(result.out, grads_of, tensors.grad_out)

        self.run, self.forward_backward = run, forward_backward
        self.backward = lambda out: torch.autograd.grad(out, grads_of, tensors.grad_out)
        self.one_iteration: Callable[[], Any] = run if case.pass_ is Pass.forward else forward_backward

    def first_call(self) -> dict[str, Any]:
        if self.pass_.needs_grad:
            return _outputs(Pass.forward_backward, self.forward_backward())
        return _outputs(Pass.forward, self.run())

    def time(self, case: Case, spot, **how):
        from attnbench.measure.timing import time_fn

        if self.pass_ is Pass.forward:
            with torch.no_grad():
                return time_fn(self.run, device=case.device, budget=case.budget, spot_check=spot, **how)
        if self.pass_ is Pass.backward:
            return time_fn(self.backward, setup=lambda: self.run().out, device=case.device, budget=case.budget,
                           spot_check=spot, **how)
        return time_fn(self.forward_backward, device=case.device, budget=case.budget, spot_check=spot, **how)


def _first_visit(case: Case, ctx: CaseContext, fields: dict[str, Any], visit: Visit) -> tuple[Status, str | None]:
    from attnbench.kernels import KERNELS
    from attnbench.measure.memory import available_memory_bytes, local_watch, measure_peak_memory, prepare_watched
    from attnbench.measure.timing import SpotCheck

    kernel = KERNELS.get(case.kernel)
    why_not = kernel.unsupported_reason(case)
    if why_not:
        return Status.unsupported, why_not
    try:
        mask = _mask(case, fields)
    except MaskTooLarge as exc:  # not attempted, like a case predicted over the memory
        return Status.skipped, str(exc)

    prediction: Prediction = predict(case, kernel, mask, ctx.matmul_tflops, available_memory_bytes(case.device))
    fields["prediction"] = prediction
    skip = skip_reason(case, prediction)
    if skip:
        return Status.skipped, skip

    fields["kernel_config"] = kernel.configuration(case)
    prepared = _inputs(case, ctx, kernel, mask)
    inputs = prepared.inputs
    watch = ctx.memory_watch if ctx.memory_watch is not None else local_watch(case.device)
    if case.kernel not in ctx.prepared_kernels:
        # a kernel's first prepare in this process imports and sets up what it needs once (compilers:
        # 100+ MB): done unwatched, so that only what prepare allocates for the case counts below
        kernel.prepare(inputs, mask)
        ctx.prepared_kernels.add(case.kernel)
    # what prepare allocates and keeps counts in the kernel's peak memory
    run, memory_mark = prepare_watched(lambda: kernel.prepare(inputs, mask), watch=watch, device=case.device)
    calls = _Closures(case, run, prepared.tensors, inputs)

    # first call: compiles where the kernel compiles, and gives the numbers to check
    status, reason = Status.ok, None
    first = calls.first_call()
    if prepared.reference is not None:
        checked = _check(first, prepared.reference, prepared.limits)
        fields["accuracy"] = Accuracy(reference=_reference_label(case.device), tensors=checked,
                                      ok=all(t.ok for t in checked.values()))
        if not fields["accuracy"].ok:
            status, reason = Status.invalid, _wrong("", checked)
    del first

    spot = SpotCheck()  # the outputs of one timed call, picked at random, are checked too
    before = _probe(ctx)
    samples = calls.time(case, spot, first_call=False, rounds=visit.rounds)
    after = _probe(ctx)
    status, reason = _check_timed_call(case, prepared, spot, samples, fields, visit, status, reason)
    planned = samples.planned
    rounds_planned = len(split_repeats(planned.repeats, visit.rounds)) if planned is not None else 1
    fields["timing"] = _timing(samples, visit, before, after, rounds_planned=rounds_planned,
                               planned_repeats=planned.repeats if planned is not None else len(samples.times_s))
    if case.device.startswith("cuda"):  # clocks and throttle reasons right after the timed loop
        from attnbench.measure.environment import nvml_snapshot

        fields["nvml"] = nvml_snapshot()
    memory = measure_peak_memory(calls.one_iteration, device=case.device, watch=watch, mark=memory_mark)
    fields["memory"] = Memory(peak_bytes=memory.peak_bytes, method=memory.method, held_bytes=memory.held_bytes,
                              watched_by=memory.watched_by)
    if memory.hwm_reset:
        status, reason = Status.invalid, (
            "the kernel reset the process's memory high-water mark during the measured call "
            "(/proc/self/clear_refs): its peak memory cannot be trusted"
        )
    return _plausible(case, ctx, fields, samples, status, reason)


def _later_visit(case: Case, ctx: CaseContext, fields: dict[str, Any], visit: Visit) -> tuple[Status, str | None]:
    """A round after the first (runner.rounds): the kernel prepared again on the same inputs,
    a short warm-up, this round's share of the timed calls, one of them checked, the inputs'
    fingerprints checked. The first visit measured memory and decided support and skips."""
    from attnbench.kernels import KERNELS
    from attnbench.measure.timing import SpotCheck

    kernel = KERNELS.get(case.kernel)
    mask = _mask(case, fields)
    prepared = _inputs(case, ctx, kernel, mask)
    if case.kernel not in ctx.prepared_kernels:  # a new worker (the last one died): set-up unmeasured
        kernel.prepare(prepared.inputs, mask)
        ctx.prepared_kernels.add(case.kernel)
    calls = _Closures(case, kernel.prepare(prepared.inputs, mask), prepared.tensors, prepared.inputs)
    if prepared.reference is not None:
        fields["accuracy"] = Accuracy(reference=_reference_label(case.device), tensors={}, ok=True)
    spot = SpotCheck()
    before = _probe(ctx)
    # first_call: one untimed call after the new prepare (lazy set-up), then the warm-up
    samples = calls.time(case, spot, first_call=True, iterations=visit.iterations)
    after = _probe(ctx)
    status, reason = _check_timed_call(case, prepared, spot, samples, fields, visit, Status.ok, None)
    fields["timing"] = _timing(samples, visit, before, after, rounds_planned=visit.rounds, planned_repeats=None)
    return _plausible(case, ctx, fields, samples, status, reason)


def _check_timed_call(case: Case, prepared: _Prepared, spot, samples, fields: dict[str, Any], visit: Visit,
                      status: Status, reason: str | None) -> tuple[Status, str | None]:
    """The randomly picked timed call of this visit against the reference."""
    if prepared.reference is not None and spot.result is not None:
        timed = _check(_outputs(case.pass_, spot.result), prepared.reference, prepared.limits)
        accuracy = fields["accuracy"]
        ok = all(t.ok for t in timed.values())
        check = TimedCallCheck(round=visit.round, index=spot.index, tensors=timed, ok=ok)
        update: dict[str, Any] = {"timed_calls": [check], "ok": accuracy.ok and ok}
        if visit.round == 0:
            update.update(timed_call=timed, timed_call_index=spot.index)
        fields["accuracy"] = accuracy.model_copy(update=update)
        if status is Status.ok and not ok:
            of_round = f" of round {visit.round + 1}" if visit.rounds > 1 else ""
            when = f" on timed call {spot.index + 1} of {samples.repeats}{of_round} (the first call was right)"
            status, reason = Status.invalid, _wrong(when, timed)
    spot.result = None
    return status, reason


def _probe(ctx: CaseContext) -> tuple[list[float], float]:
    """The canary's samples now, and the wall seconds the probe took."""
    start = time.perf_counter()
    samples = ctx.probe_canary()
    return samples, time.perf_counter() - start


def _timing(samples, visit: Visit, before: tuple[list[float], float], after: tuple[list[float], float], *,
            rounds_planned: int, planned_repeats: int | None) -> Timing:
    canary = (before[1] + after[1]) if before[0] or after[0] else None
    return Timing(
        method=samples.method,
        warmup=samples.warmup,
        repeats=len(samples.times_s),
        median_s=samples.median_s,
        p20_s=samples.p20_s,
        p80_s=samples.p80_s,
        samples_s=samples.times_s,
        threads=torch.get_num_threads(),
        rounds=[RoundTiming(round=visit.round, warmup=samples.warmup, samples_s=samples.times_s,
                            canary_before_s=before[0], canary_after_s=after[0], canary_seconds=canary,
                            cpu_samples_s=samples.cpu_times_s)],
        rounds_planned=rounds_planned,
        planned_repeats=planned_repeats,
        cpu_samples_s=samples.cpu_times_s,
    )


def _plausible(case: Case, ctx: CaseContext, fields: dict[str, Any], samples, status: Status,
               reason: str | None) -> tuple[Status, str | None]:
    """The visit's rate against the device's peak, and the shared inputs against their fingerprints.

    Every visit checks its own median: the median of all rounds' samples lies between the
    lowest and the highest visit median, so no merged record can claim a rate above them."""
    from attnbench.measure.device import checked_peak
    from attnbench.measure.flops import tflops_per_second

    rate = tflops_per_second(fields["flops"], samples.median_s)
    fields["tflops"] = rate
    peak = checked_peak(ctx.peak_tflops, case.device, case.dtype, rate) if status is Status.ok else None
    if status is Status.ok and rate is not None and peak is not None and rate > peak:
        status, reason = Status.invalid, f"{rate:.3g} TFLOPs/s is above this device's {case.dtype} peak of {peak:.3g}: impossible"
    mutated = ctx.inputs_changed()
    if mutated:
        status, reason = Status.invalid, (
            f"the kernel changed its inputs in place ({', '.join(mutated)}); its numbers cannot be trusted "
            "(the next kernel gets fresh inputs)"
        )
    return status, reason


def _outputs(pass_: Pass, result: Any) -> dict[str, Any]:
    """What one call returned, by name (forward: out, lse; backward: dq, dk, dv; both: all)."""
    if pass_ is Pass.forward:
        return {"out": result.out, "lse": result.lse}
    if pass_ is Pass.backward:
        return dict(zip(("dq", "dk", "dv"), result))
    forward, grads = result
    return {"out": forward.out, "lse": forward.lse, **dict(zip(("dq", "dk", "dv"), grads))}


def _check(actual: dict[str, Any], reference, limits: dict[str, float]) -> dict[str, TensorAccuracy]:
    """Errors of each output against the reference, with the verdict under its tolerance."""
    from attnbench.measure.accuracy import compare_to_reference

    errors = compare_to_reference({k: v for k, v in actual.items() if v is not None}, reference)
    report = {}
    for name, err in errors.items():
        tol = limits.get(name)
        ok = not err.has_nan and err.rel_l2 is not None and (tol is None or err.rel_l2 <= tol)
        report[name] = TensorAccuracy(
            max_abs=_finite(err.max_abs), rel_l2=_finite(err.rel_l2), tolerance=tol, has_nan=err.has_nan, ok=ok
        )
    return report


def _wrong(when: str, checked: dict[str, TensorAccuracy]) -> str:
    """The reason of an inaccurate record: which outputs, and the first one's error."""
    bad = [n for n, t in checked.items() if not t.ok]
    worst = checked[bad[0]]
    if worst.has_nan or worst.rel_l2 is None:
        what = "NaN"
    else:
        what = f"relative L2 error {worst.rel_l2:.3g} > tolerance {worst.tolerance:.3g}"
    return f"{', '.join(bad)} wrong against the reference{when}: {bad[0]} {what}"


def _finite(x: float | None) -> float | None:
    return x if x is not None and x == x and abs(x) != float("inf") else None


def _reference_label(device: str) -> str:
    return "float32, query chunks, on the GPU" if device.startswith("cuda") else "float64, query chunks, on the CPU"
