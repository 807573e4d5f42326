"""One context-parallel case in, one record out, whatever happens to its ranks.

`execute_cp_case` has the contract of `attnbench.runner.execute.execute_case`: it never
raises for a failing case (only KeyboardInterrupt goes through). In order:

0. the case as its ranks will run it (:func:`resolve_case`): the ranks per node of this
   launch (the default Ulysses degree stays inside a node) and the rows the distributed
   accuracy check covers (all, or a sample when the full check is predicted over budget);
1. the method's support check (unknown method, unavailable here, shape it cannot split):
   `unsupported` with the reason, nothing launched;
2. placement (more ranks per node than GPUs, or than the CPU rank cap): `skipped`;
3. launch (`attnbench.cp.launch`), then the record from rank 0's `RankOutcome`, or
   `timeout` / `error` with the failed rank, its exit code or signal, the stderr tail and,
   for a timeout, every rank's Python stacks.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Optional

from attnbench.cases import Case
from attnbench.cp.launch import LaunchOptions, LaunchResult, launch_case, placement_problem
from attnbench.errors import Unsupported, UserError
from attnbench.results.schema import Record, Status
from attnbench.results.store import utc_now


def method_problem(case: Case) -> Optional[str]:
    """Why the case's CP method cannot run it (-> unsupported), or None.

    Asks the method (`unsupported_reason(case)` or `check(case)`, returning a reason or
    None, or raising `Unsupported`), after the local kernel is known to exist.
    """
    from attnbench.cp import CP_METHODS
    from attnbench.kernels import KERNELS

    assert case.cp is not None
    try:
        method = CP_METHODS.get(case.cp.method)
        KERNELS.check(case.kernel)
    except UserError as exc:
        return str(exc)
    for attr in ("unsupported_reason", "check"):
        ask = getattr(method, attr, None)
        if callable(ask):
            try:
                reason = ask(case)
            except Unsupported as exc:
                return str(exc) or f"{case.cp.method} cannot run this case"
            return str(reason) if reason else None
    return None


def with_placement(case: Case, options: LaunchOptions) -> Case:
    """The case with the ranks per node of this launch (None on one node)."""
    assert case.cp is not None
    per_node = case.cp.world_size // options.nnodes if options.multi_node else None
    return case.model_copy(update={"cp": case.cp.model_copy(update={"ranks_per_node": per_node})})


def with_check_rows(case: Case, matmul_tflops: dict[str, float]) -> Case:
    """The case with the query rows per rank its accuracy check covers (None: all)."""
    from attnbench.cp.check import plan_rows

    assert case.cp is not None
    rows = plan_rows(case, matmul_tflops).rows
    return case.model_copy(update={"cp": case.cp.model_copy(update={"check_rows": rows})})


def matmul_rates(ctx: Any, device: str) -> dict[str, float]:
    """The run's calibration, or this device's (cached) when the run has none yet."""
    rates = getattr(ctx, "matmul_tflops", None)
    if rates:
        return rates
    from attnbench.measure.device import calibrate_device

    return dict(calibrate_device(device, ("float32",)).matmul_tflops)


def execute_cp_case(case: Case, ctx: Any, options: Optional[LaunchOptions] = None) -> Record:
    """Run one CP case; `options` default to `ctx.cp_launch`, else a single node."""
    assert case.cp is not None, "execute_cp_case needs a case with `cp`"
    options = options or getattr(ctx, "cp_launch", None) or LaunchOptions()
    started_at, start = utc_now(), time.perf_counter()
    fields: dict[str, Any] = {}
    detail: Optional[str] = None
    try:
        case = with_placement(case, options)
        reason = method_problem(case)
        if reason:
            status = Status.unsupported
        else:
            reason = placement_problem(case, options)
            if reason:
                status = Status.skipped
            else:
                case = with_check_rows(case, matmul_rates(ctx, case.device))
                status, reason, detail = record_fields(case, launch_case(case, options), options, fields)
                from attnbench.measure.device import checked_peak

                peak = checked_peak(getattr(ctx, "peak_tflops", {}), case.device, case.dtype, fields.get("tflops"))
                status, reason = above_peak(status, reason, fields.get("tflops"), peak)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the harness's own failure must not stop the suite either
        from attnbench.errors import first_line

        fields = {}
        status, reason, detail = Status.error, first_line(exc), traceback.format_exc()[-4000:]
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


def record_fields(
    case: Case, result: LaunchResult, options: LaunchOptions, fields: dict[str, Any]
) -> tuple[Status, Optional[str], Optional[str]]:
    """Status, reason and detail of a launched case; the measured fields go into `fields`."""
    status, reason, detail = _launch_verdict(result, options, fields)
    if result.relaunched:
        detail = f"{detail}\n\n{result.relaunched}" if detail else result.relaunched
    return status, reason, detail


def _launch_verdict(result: LaunchResult, options: LaunchOptions, fields: dict[str, Any]):
    from attnbench.cp.protocol import RankOutcome

    failure = _failure_text(result)
    if result.outcome_text is not None:
        try:
            outcome = RankOutcome.model_validate_json(result.outcome_text)
        except ValueError as exc:
            return Status.error, f"rank 0 wrote an unreadable outcome: {str(exc).splitlines()[0]}", result.stderr_tail
        for name in ("mask", "flops", "tflops", "timing", "memory", "accuracy", "cp"):
            value = getattr(outcome, name)
            if value is not None:
                fields[name] = value
        detail = outcome.detail
        late = result.note or (failure if result.timed_out or result.returncode else None)
        if late and outcome.status not in (Status.error, Status.oom):
            # measured, but the ranks did not end cleanly afterwards: say so
            extra = f"after rank 0 wrote its outcome: {late}"
            detail = f"{detail}\n{extra}" if detail else extra
        return outcome.status, outcome.reason, detail
    tail = result.stderr_tail or "(no stderr)"
    if result.stacks:
        tail = (f"{tail}\n\nPython stacks of the ranks (faulthandler; at the timeout, or when torchrun "
                f"stopped them after a failure):\n{result.stacks}")
    if result.timed_out:
        return Status.timeout, f"no result within {result.timeout_s:g} s; every rank killed", tail
    if result.returncode == 0:
        if options.node_rank != 0:  # never written: node 0 records the case
            return Status.ok, f"node {options.node_rank} took part; node 0 records the measurements", None
        return Status.error, "the ranks ended without an outcome from rank 0", tail
    return Status.error, failure, tail


def above_peak(status: Status, reason: Optional[str], per_gpu_tflops: Optional[float], peak: Optional[float]):
    """A per-GPU figure above one device's peak cannot be real: the record is invalid."""
    if status is Status.ok and per_gpu_tflops is not None and peak is not None and per_gpu_tflops > peak:
        return Status.invalid, f"{per_gpu_tflops:.3g} TFLOPs/s per GPU is above this device's peak of {peak:.3g} for the dtype: impossible"
    return status, reason


def _failure_text(result: LaunchResult) -> str:
    if result.timed_out:
        return f"timed out after {result.timeout_s:g} s; every rank killed"
    if result.failures:
        root, others = result.failures[0], result.failures[1:]
        text = root.describe()
        if others:
            text += "; then " + ", ".join(f.describe() for f in others[:3]) + ("..." if len(others) > 3 else "")
        return text
    code = result.returncode
    if code is None:
        return "the ranks did not end cleanly"
    if code < 0:
        import signal

        try:
            return f"the launcher was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the launcher was killed by signal {-code}"
    return f"the launcher exited with code {code}"


#: seconds to start a case's ranks and tear them down (agent + rendezvous; spawn re-imports torch)
LAUNCH_OVERHEAD_S = {"fork": 2.0, "spawn": 8.0}


def predict_cp(case: Case, matmul_tflops: dict[str, float]):
    """A rough `Prediction` of a CP case: the local kernel's prediction for the whole problem,
    its work split over the ranks (on CPU the ranks share the cores, so no speed-up), timed
    three times when the method separates compute from communication (total, compute only,
    communication only), plus the distributed accuracy check (cp.check) and the launch."""
    from attnbench.cp import CP_METHODS
    from attnbench.cp.check import plan_rows
    from attnbench.cp.launch import start_method
    from attnbench.kernels import KERNELS
    from attnbench.masks import MASKS, build_mask
    from attnbench.measure.predict import predict
    from attnbench.results.schema import Prediction

    assert case.cp is not None
    kernel = KERNELS.get(case.kernel)
    heads = case.shape.heads_q if MASKS.get(case.mask.name).dynamic else 1
    mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params, heads=heads)
    whole = predict(case.model_copy(update={"check_accuracy": False}), kernel, mask, matmul_tflops, None)
    world = case.cp.world_size
    share = 1 if case.device.startswith("cpu") else world
    per_iteration = (whole.seconds_per_iteration or 0.0) / share
    b = case.budget
    loops = 3 if getattr(CP_METHODS.get(case.cp.method), "separable", True) else 1
    timed = loops * (b.warmup_seconds + max(b.measure_seconds, b.min_repeats * per_iteration) + 2 * per_iteration)
    timed += 3 * per_iteration  # accuracy run, counted iteration, memory
    check = plan_rows(case, matmul_tflops).seconds
    seconds = LAUNCH_OVERHEAD_S[start_method(case)] + timed + check
    return Prediction(seconds_per_iteration=per_iteration, case_seconds=seconds, bytes=None, free_bytes=None)
