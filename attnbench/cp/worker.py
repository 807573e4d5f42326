"""One CP case inside one rank process: `run_rank(case)`.

Called in every rank after ``torch.distributed`` is initialised (gloo on CPU, NCCL with the
CUDA device set from LOCAL_RANK on GPUs). Every rank builds the mask, the plan and the SAME
global seeded inputs (``make_tensors`` on the CPU), keeps its shard on its device, and:

1. accuracy (``case.check_accuracy``): one run with the lse, backward with the fixed global
   grad_out when the pass needs it; out, lse, dq, dk, dv are gathered (uncounted) to rank 0,
   put back in global order and compared with the single-process float64 reference. The
   tolerance is ``runner.tolerance.tolerances`` times ``sqrt(W)`` (:func:`world_factor`):
   rounding grows with the number of partial results merged, while a wrong merge or a wrong
   slice gives errors of order one, far above it;
2. communication: one counted iteration (forward, and backward when the pass has one);
3. timing: iteration counts planned from the slowest rank's estimate (``plan_iterations``),
   a barrier before every timed iteration, per-rank ``perf_counter`` on CPU or CUDA events;
   backward timed after an untimed forward; latency of an iteration = its slowest rank;
4. peak memory of one iteration on every rank.

Rank 0 returns the :class:`RankOutcome`; other ranks return None. Unsupported cases are
decided identically on every rank (no communication). Exceptions propagate (the launcher
records them) except out-of-memory, which becomes status oom.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from attnbench.cases import Case, Pass
from attnbench.cp.protocol import RankOutcome
from attnbench.errors import Unsupported
from attnbench.results.schema import Accuracy, CommCount, CPResult, Memory, Status, TensorAccuracy, Timing


def world_factor(world: int) -> float:
    """Tolerance multiplier at world size W: sqrt(W) (1 on one rank)."""
    return math.sqrt(max(1, world))


def _device(case: Case) -> torch.device:
    if case.device.startswith("cuda"):
        dev = torch.device(case.device)
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _outcome(rank: int, **fields) -> RankOutcome | None:
    return RankOutcome(**fields) if rank == 0 else None


def run_rank(case: Case) -> RankOutcome | None:
    """Run ``case`` (a CP case) on this rank; rank 0 returns the outcome, others None."""
    from attnbench.cp import CP_METHODS
    from attnbench.runner.execute import first_line, is_out_of_memory

    rank, world = dist.get_rank(), dist.get_world_size()
    if case.cp is None:
        raise ValueError(f"case {case.label()} is not a CP case (no cp spec)")
    if world != case.cp.world_size:
        raise RuntimeError(f"case wants world size {case.cp.world_size}, the process group has {world}")
    method = CP_METHODS.get(case.cp.method)
    reason = method.unsupported_reason(case)
    if reason:
        return _outcome(rank, status=Status.unsupported, reason=reason)
    try:
        return _run(case, method, rank, world)
    except Unsupported as exc:
        return _outcome(rank, status=Status.unsupported, reason=str(exc))
    except Exception as exc:
        if is_out_of_memory(exc):
            return _outcome(rank, status=Status.oom, reason=first_line(exc))
        raise


def _run(case: Case, method, rank: int, world: int) -> RankOutcome | None:
    from attnbench.cp.base import CPContext
    from attnbench.cp.comm import Comm, CommCounter
    from attnbench.cp.dispatch import imbalance
    from attnbench.kernels import KERNELS
    from attnbench.masks import build_mask
    from attnbench.measure.flops import attention_flops
    from attnbench.measure.memory import measure_peak_memory
    from attnbench.runner.inputs import make_tensors

    s = case.shape
    mask = build_mask(case.mask.name, s.seqlen, case.mask.params)
    plan = method.plan(case, mask)  # raises Unsupported for impossible splits
    device = _device(case)
    tensors = make_tensors(case.model_copy(update={"device": "cpu"}))
    scale = 1.0 / math.sqrt(s.head_dim)
    positions = torch.from_numpy(plan.layout.positions(rank))

    def shard(t: torch.Tensor) -> torch.Tensor:
        return t.index_select(2, positions).to(device).contiguous()

    q, k, v, grad_out = (shard(t) for t in (tensors.q, tensors.k, tensors.v, tensors.grad_out))
    needs_grad = case.pass_.needs_grad
    leaves = [t.detach().requires_grad_(needs_grad) for t in (q, k, v)]
    counter = CommCounter()
    ctx = CPContext(
        case=case, mask=mask, rank=rank, world=world, device=device, scale=scale,
        kernel=KERNELS.get(case.kernel) if method.uses_kernel else None,
        counter=counter, comm=Comm(counter),
    )
    run = method.prepare(ctx, plan)

    def forward(need_lse: bool = False):
        return run.forward(*leaves, need_lse)

    def backward(out):
        return torch.autograd.grad(out, leaves, grad_out)

    def full_pass():
        if case.pass_ is Pass.forward:
            with torch.no_grad():
                return forward()[0]
        return backward(forward()[0])

    fields: dict[str, Any] = {"mask": mask.info()}
    flops = attention_flops(batch=s.batch, heads_q=s.heads_q, head_dim=s.head_dim, area=mask.area, pass_=case.pass_)
    fields["flops"] = flops
    status, reason = Status.ok, None

    with run.scope():
        # 1. accuracy
        if case.check_accuracy:
            counter.enabled = False
            out, lse = forward(need_lse=True)
            local = {"out": out.detach(), "lse": None if lse is None else lse.detach()}
            if needs_grad:
                local.update(zip(("dq", "dk", "dv"), backward(out)))
            del out, lse
            full = {name: _gather_global(t, plan.layout, device) for name, t in local.items() if t is not None}
            del local
            if rank == 0:
                accuracy = _check(case, mask, tensors, full, scale, world)
                fields["accuracy"] = accuracy
                if not accuracy.ok:
                    bad = [n for n, t in accuracy.tensors.items() if not t.ok]
                    t = accuracy.tensors[bad[0]]
                    what = "NaN" if t.has_nan else f"relative L2 error {t.rel_l2:.3g} > tolerance {t.tolerance:.3g}"
                    status, reason = Status.invalid, f"{', '.join(bad)} wrong against the reference: {bad[0]} {what}"
            del full
            dist.barrier()

        # 2. communication of one iteration
        counter.enabled = True
        counter.reset()
        full_pass()
        _sync(device)
        counts = {"forward": CommCount(bytes_sent=counter.bytes["forward"], calls=counter.calls["forward"])}
        if needs_grad:
            counts["backward"] = CommCount(bytes_sent=counter.bytes["backward"], calls=counter.calls["backward"])
        counter.enabled = False

        # 3. timing
        timed = _timed_iteration(case.pass_, forward, backward, full_pass, device)
        samples, warmup = _time(timed, case, device)

        # 4. memory
        memory = measure_peak_memory(full_pass, device=device)

    gathered = [None] * world
    dist.all_gather_object(gathered, {"samples": samples, "counts": counts, "peak": memory.peak_bytes})
    if rank != 0:
        return None

    per_iteration = np.max(np.array([g["samples"] for g in gathered]), axis=0)
    rank_median = [float(np.median(g["samples"])) for g in gathered]
    median = float(np.median(per_iteration))
    tflops = flops / (median * world) / 1e12 if median > 0 else None
    area = plan.rank_area(mask)
    expected = {p: CommCount(bytes_sent=b, calls=c) for p, (b, c) in method.expected_comm(case).items()}
    peaks = [g["peak"] for g in gathered]
    fields.update(
        timing=Timing(
            method="cuda_event" if device.type == "cuda" else "perf_counter",
            warmup=warmup, repeats=len(per_iteration), median_s=median,
            p20_s=float(np.percentile(per_iteration, 20)), p80_s=float(np.percentile(per_iteration, 80)),
            samples_s=[float(x) for x in per_iteration],
        ),
        tflops=tflops,
        memory=Memory(peak_bytes=max((p for p in peaks if p is not None), default=None), method=memory.method),
        cp=CPResult(
            world_size=world,
            backend=str(dist.get_backend()),
            rank_median_s=rank_median,
            mean_s=float(np.mean(rank_median)),
            imbalance=imbalance(rank_median),
            rank_area=area,
            area_imbalance=imbalance(area),
            comm={p: [g["counts"][p] for g in gathered] for p in counts},
            comm_expected=expected,
            per_gpu_tflops=tflops,
            rank_peak_bytes=peaks,
        ),
    )
    return RankOutcome(status=status, reason=reason, **fields)


def _gather_global(t: torch.Tensor, layout, device: torch.device) -> torch.Tensor | None:
    """Every rank's shard (sequence dim 2) back in global order; rank 0 gets it, others None."""
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(layout.world)]
    dist.all_gather(parts, t)
    if dist.get_rank() != 0:
        return None
    dispatched = torch.cat([p.cpu() for p in parts], dim=2)
    order = torch.from_numpy(layout.permutation())
    out = torch.empty_like(dispatched)
    out.index_copy_(2, order, dispatched)
    return out


def _check(case: Case, mask, tensors, full: dict, scale: float, world: int) -> Accuracy:
    from attnbench.measure.accuracy import compare_to_reference
    from attnbench.measure.reference import reference_attention
    from attnbench.runner.tolerance import tolerances

    grad_out = tensors.grad_out if case.pass_.needs_grad else None
    reference = reference_attention(tensors.q, tensors.k, tensors.v, mask, grad_out=grad_out, scale=scale)
    errors = compare_to_reference(full, reference)
    limits = tolerances(case.device, case.dtype, case.shape.head_dim)
    factor = world_factor(world)
    report = {}
    for name, err in errors.items():
        tol = limits.get(name)
        tol = None if tol is None else tol * factor
        ok = not err.has_nan and math.isfinite(err.rel_l2) and (tol is None or err.rel_l2 <= tol)
        report[name] = TensorAccuracy(
            max_abs=err.max_abs if math.isfinite(err.max_abs) else None,
            rel_l2=err.rel_l2 if math.isfinite(err.rel_l2) else None,
            tolerance=tol, has_nan=err.has_nan, ok=ok,
        )
    return Accuracy(
        reference=f"float64 cpu, single process; tolerance x sqrt(W) = {factor:.3g}",
        tensors=report, ok=all(t.ok for t in report.values()),
    )


def _timed_iteration(pass_: Pass, forward, backward, full_pass, device) -> Callable[[], float]:
    """One iteration returning this rank's seconds: a barrier, then the timed region."""
    cuda = device.type == "cuda"

    def region(setup, body) -> float:
        arg = setup() if setup is not None else None
        _sync(device)
        dist.barrier()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            body(arg)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        body(arg)
        return time.perf_counter() - t0

    if pass_ is Pass.backward:
        return lambda: region(lambda: forward()[0], backward)
    return lambda: region(None, lambda _: full_pass())


def _time(iteration: Callable[[], float], case: Case, device) -> tuple[list[float], int]:
    """(this rank's timed samples, warm-up count); counts agreed by every rank."""
    from attnbench.measure.timing import plan_iterations

    estimate = [iteration() for _ in range(2)]
    slowest = torch.tensor([max(estimate)], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    warmup, repeats = plan_iterations(float(slowest.item()), case.budget)
    warmup = max(0, warmup - len(estimate))
    for _ in range(warmup):
        iteration()
    return [iteration() for _ in range(repeats)], warmup
