"""One CP case inside one rank process: `run_rank(case)`.

Called in every rank after ``torch.distributed`` is initialised (gloo on CPU, NCCL with the
CUDA device set from LOCAL_RANK on GPUs). Every rank builds the mask and the plan, generates
ONLY its own shard of q, k, v, dO (attnbench.inputs.make_shard: the values the single-process
path has at those positions), and:

1. accuracy (``case.check_accuracy``): one run with the lse, backward when the pass has one,
   checked by the distributed reference (attnbench.cp.check: each rank its own rows against
   every key, streamed; all rows, or the sample ``case.cp.check_rows`` the runner chose from
   the predicted cost). Tolerance: ``attnbench.tolerance.tolerances`` times sqrt(W);
2. communication: one counted iteration (forward, and backward when the pass has one);
3. memory kept for backward: the bytes autograd saves in one forward (saved_tensors_hooks);
4. timing: iteration counts planned from the slowest rank's estimate (``plan_iterations``),
   a barrier before every timed iteration, per-rank ``perf_counter`` on CPU or CUDA events;
   backward timed after an untimed forward; latency of an iteration = its slowest rank.
   Then the same iterations with communication switched off (compute only) and with the
   kernel switched off (communication only), for the overlap figures;
5. peak memory of one iteration on every rank.

A hostile local kernel cannot make an ``ok`` of a wrong number: the outputs of the last timed
iteration are compared with those of the checked run (within the case's tolerance), the
rank's input shards are fingerprinted (attnbench.measure.integrity) before the first call and
checked after the last, and a reset of the memory high-water mark during the measured call is
detected. Any of these on any rank makes the record invalid, naming the rank.

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
from attnbench.errors import Unsupported, first_line, is_out_of_memory
from attnbench.results.schema import (
    Accuracy, CommCount, Coverage, CPOverlap, CPResult, Memory, Status, TensorAccuracy, Timing,
)


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


def run_rank(case: Case, *, timed: bool = True) -> RankOutcome | None:
    """Run ``case`` (a CP case) on this rank; rank 0 returns the outcome, others None.
    ``timed=False`` stops after steps 1 to 3 (accuracy, bytes counted and kept: what a
    correctness sweep needs), so the outcome has no timing or peak memory."""
    from attnbench.cp import CP_METHODS

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
        return _run(case, method, rank, world, timed)
    except Unsupported as exc:
        return _outcome(rank, status=Status.unsupported, reason=str(exc))
    except Exception as exc:
        if is_out_of_memory(exc):
            return _outcome(rank, status=Status.oom, reason=first_line(exc))
        raise


def saved_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), bytes autograd saves for backward while running it): distinct storages, each
    counted once at its size (views of one buffer count once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, sum(storages.values())


def _run(case: Case, method, rank: int, world: int, timed: bool) -> RankOutcome | None:
    from attnbench.cp.base import CPContext
    from attnbench.cp.comm import Comm, CommCounter, Switches
    from attnbench.cp.local import LocalStep
    from attnbench.inputs import make_shard
    from attnbench.kernels import KERNELS
    from attnbench.masks import build_mask
    from attnbench.measure.flops import attention_flops
    from attnbench.measure.integrity import fingerprints
    from attnbench.measure.memory import measure_peak_memory

    s = case.shape
    mask = build_mask(case.mask.name, s.seqlen, case.mask.params)
    plan = method.plan(case, mask)  # raises Unsupported for impossible splits
    device = _device(case)
    scale = 1.0 / math.sqrt(s.head_dim)
    tensors = make_shard(case, plan.layout.runs[rank], device)
    needs_grad = case.pass_.needs_grad
    leaves = [t.detach().requires_grad_(needs_grad) for t in (tensors.q, tensors.k, tensors.v)]
    grad_out = tensors.grad_out
    inputs = _named_inputs(tensors)
    prints = fingerprints(inputs)  # before any kernel sees them
    counter = CommCounter()
    switches = Switches()
    ctx = CPContext(
        case=case, mask=mask, rank=rank, world=world, device=device, scale=scale,
        step=LocalStep(KERNELS.get(case.kernel) if method.uses_kernel else None, scale, switches),
        counter=counter, comm=Comm(counter, None, switches),
    )
    run = method.prepare(ctx, plan)

    def forward(need_lse: bool = False):
        return run.forward(*leaves, need_lse)

    def backward(out, dout=None):
        return torch.autograd.grad(out, leaves, grad_out if dout is None else dout)

    def full_pass():
        if case.pass_ is Pass.forward:
            with torch.no_grad():
                return forward()[0]
        return backward(forward()[0])

    fields: dict[str, Any] = {"mask": mask.info()}
    flops = attention_flops(batch=s.batch, heads_q=s.heads_q, head_dim=s.head_dim, area=mask.area, pass_=case.pass_)
    fields["flops"] = flops
    status, reason = Status.ok, None
    checked: dict[str, torch.Tensor] = {}  # the checked run's outputs, for the timed-call comparison

    with run.scope():
        # 1. accuracy
        if case.check_accuracy:
            counter.enabled = False
            accuracy = _accuracy(case, mask, plan.layout, rank, world, tensors, leaves, forward, backward, scale, device,
                                 checked=checked)
            if rank == 0:
                fields["accuracy"] = accuracy
                if not accuracy.ok:
                    bad = [n for n, t in accuracy.tensors.items() if not t.ok]
                    t = accuracy.tensors[bad[0]]
                    what = "NaN" if t.has_nan else f"relative L2 error {t.rel_l2:.3g} > tolerance {t.tolerance:.3g}"
                    status, reason = Status.invalid, f"{', '.join(bad)} wrong against the reference: {bad[0]} {what}"
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

        # 3. what one forward keeps for backward
        kept = None
        if needs_grad:
            out, kept = saved_bytes(lambda: forward()[0])
            del out

        # 4. timing: the case as it is, then compute only and communication only
        samples, warmup, alone, memory, last = [], 0, {}, None, {}
        if timed:
            iteration = _timed_iteration(case.pass_, forward, backward, full_pass, device)
            samples, warmup = _time(iteration, case, device, last=last)
            if method.separable:
                for name, (communicate, compute) in {"compute": (False, True), "communication": (True, False)}.items():
                    switches.communicate, switches.compute = communicate, compute
                    alone[name], _ = _time(iteration, case, device)
                switches.communicate = switches.compute = True

            # 5. memory
            memory = measure_peak_memory(full_pass, device=device)

    problems = _hostile_signs(case, world, checked, last, inputs, prints, memory)
    del checked, last
    gathered = [None] * world
    mine = {"samples": samples, "alone": alone, "counts": counts, "peak": memory and memory.peak_bytes, "kept": kept,
            "problems": problems}
    dist.all_gather_object(gathered, mine)
    if rank != 0:
        return None
    flagged = [(r, g["problems"][0]) for r, g in enumerate(gathered) if g["problems"]]
    if flagged and status is Status.ok:
        r, what = flagged[0]
        others = f" (and {len(flagged) - 1} other rank(s))" if len(flagged) > 1 else ""
        status, reason = Status.invalid, f"rank {r}: {what}{others}"
    if not timed:
        return RankOutcome(status=status, reason=reason, **fields, cp=_cp_result(
            method, case, plan, mask, world, gathered, counts, median=None, tflops=None))

    per_iteration = _slowest(gathered, lambda g: g["samples"])
    median = float(np.median(per_iteration))
    tflops = flops / (median * world) / 1e12 if median > 0 else None
    peaks = [g["peak"] for g in gathered]
    fields.update(
        timing=Timing(
            method="cuda_event" if device.type == "cuda" else "perf_counter",
            warmup=warmup, repeats=len(per_iteration), median_s=median,
            p20_s=float(np.percentile(per_iteration, 20)), p80_s=float(np.percentile(per_iteration, 80)),
            samples_s=[float(x) for x in per_iteration],
        ),
        tflops=tflops,
        memory=Memory(peak_bytes=max((p for p in peaks if p is not None), default=None), method=memory.method,
                      watched_by=memory.watched_by),
        cp=_cp_result(method, case, plan, mask, world, gathered, counts, median=median, tflops=tflops),
    )
    return RankOutcome(status=status, reason=reason, **fields)


def _cp_result(method, case, plan, mask, world, gathered, counts, *, median, tflops) -> CPResult:
    """The record's ``cp`` block from every rank's figures (rank 0)."""
    from attnbench.cp.dispatch import imbalance

    rank_median = [float(np.median(g["samples"])) if g["samples"] else 0.0 for g in gathered]
    area = plan.rank_area(mask)
    expected = {p: CommCount(bytes_sent=b, calls=c) for p, (b, c) in method.expected_comm(case).items()}
    return CPResult(
        world_size=world,
        backend=str(dist.get_backend()),
        rank_median_s=rank_median,
        mean_s=float(np.mean(rank_median)),
        imbalance=imbalance(rank_median),
        rank_area=area,
        area_imbalance=imbalance(area),
        comm={p: [g["counts"][p] for g in gathered] for p in counts} if method.counts_comm else {},
        comm_expected=expected,
        comm_counted=method.counts_comm,
        per_gpu_tflops=tflops,
        rank_peak_bytes=[g["peak"] for g in gathered],
        rank_saved_bytes=[g["kept"] for g in gathered],
        plan=plan.describe(),
        overlap=_overlap(median, gathered) if median is not None and gathered[0]["alone"] else None,
    )


def _slowest(gathered: list[dict], samples_of) -> np.ndarray:
    """Per iteration, the slowest rank's time (ranks agree on the iteration count)."""
    return np.max(np.array([samples_of(g) for g in gathered]), axis=0)


def _overlap(total_s: float, gathered: list[dict]) -> CPOverlap:
    """The overlap figures; no efficiency when the case sends nothing (W = 1: its
    "communication only" time is the iteration's bookkeeping, nothing to hide)."""
    compute = _slowest(gathered, lambda g: g["alone"]["compute"])
    communication = _slowest(gathered, lambda g: g["alone"]["communication"])
    compute_s, comm_s = float(np.median(compute)), float(np.median(communication))
    exposed = total_s - compute_s
    sends = any(c.bytes_sent for g in gathered for c in g["counts"].values())
    efficiency = None if comm_s <= 0 or not sends else min(1.0, max(0.0, 1.0 - exposed / comm_s))
    return CPOverlap(compute_s=compute_s, communication_s=comm_s, exposed_s=exposed, efficiency=efficiency,
                     compute_samples_s=[float(x) for x in compute],
                     communication_samples_s=[float(x) for x in communication])


def _accuracy(case, mask, layout, rank, world, tensors, leaves, forward, backward, scale, device,
              checked: dict) -> Accuracy | None:
    """Run the method once with the lse (and backward), check it with the distributed reference;
    every rank takes part, rank 0 gets the Accuracy. The checked outputs that a timed call
    can be compared with go into ``checked`` (out; dq, dk, dv when every row was checked)."""
    from attnbench.cp import check
    from attnbench.tolerance import tolerances

    local = layout.shard
    rows = check.sample_rows(local, case.cp.check_rows, case.seed, rank)
    needs_grad = case.pass_.needs_grad
    dout = None
    if needs_grad:
        dout = tensors.grad_out
        if len(rows) < local:  # the loss sees the checked rows only
            keep = torch.zeros(local, dtype=dout.dtype, device=device)
            keep[torch.from_numpy(rows).to(device)] = 1
            dout = dout * keep.view(1, 1, -1, 1)
    out, lse = forward(need_lse=True)
    actual = {"out": out.detach(), "lse": None if lse is None else lse.detach()}
    if needs_grad:
        actual.update(zip(("dq", "dk", "dv"), backward(out, dout)))
    del out, lse
    checked["out"] = actual["out"]
    if needs_grad and len(rows) == local:  # a sampled check's gradients are of a masked loss
        checked.update((name, actual[name]) for name in ("dq", "dk", "dv"))
    shards = check.Shards(q=tensors.q, k=tensors.k, v=tensors.v, grad_out=dout, actual=actual)
    reference = check.reference_of_rows(mask, layout, rank, rows, shards, scale, needs_grad)
    sums = check.reduce_errors(check.local_errors(reference, shards, rows), device)
    del reference, shards, actual
    if rank != 0:
        return None
    limits = tolerances(case.device, case.dtype, case.shape.head_dim)
    factor = check.tolerance_factor(world)
    report = {}
    for name, total in sums.items():
        err = total.finish()
        tol = limits.get(name)
        tol = None if tol is None else tol * factor
        ok = not err.has_nan and math.isfinite(err.rel_l2) and (tol is None or err.rel_l2 <= tol)
        report[name] = TensorAccuracy(
            max_abs=err.max_abs if math.isfinite(err.max_abs) else None,
            rel_l2=err.rel_l2 if math.isfinite(err.rel_l2) else None,
            tolerance=tol, has_nan=err.has_nan, ok=ok,
        )
    where = "float32 on each rank's GPU" if device.type == "cuda" else "float64 on each rank's CPU"
    return Accuracy(
        reference=f"{where}, distributed (K/V shards streamed); tolerance x sqrt(W) = {factor:.3g}",
        tensors=report, ok=all(t.ok for t in report.values()),
        coverage=Coverage(**check.coverage(case, len(rows))),
    )


def _timed_iteration(pass_: Pass, forward, backward, full_pass, device) -> Callable[..., float]:
    """One iteration returning this rank's seconds: a barrier, then the timed region.
    ``iteration(keep)`` with a dict puts what the timed region returned into it by name
    (out; dq, dk, dv), outside the timed region."""
    cuda = device.type == "cuda"

    def region(setup, body, keep: dict | None) -> float:
        arg = setup() if setup is not None else None
        _sync(device)
        dist.barrier()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = body(arg)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            result = body(arg)
            seconds = time.perf_counter() - t0
        if keep is not None:
            keep.update(_named_outputs(pass_, arg, result))
        return seconds

    if pass_ is Pass.backward:
        return lambda keep=None: region(lambda: forward()[0], backward, keep)
    return lambda keep=None: region(None, lambda _: full_pass(), keep)


def _named_outputs(pass_: Pass, setup_result, result) -> dict[str, torch.Tensor]:
    if pass_ is Pass.forward:
        return {"out": result.detach()}
    named = dict(zip(("dq", "dk", "dv"), result))
    if pass_ is Pass.backward:
        named["out"] = setup_result.detach()
    return named


def _named_inputs(tensors) -> dict[str, torch.Tensor]:
    named = {"q": tensors.q, "k": tensors.k, "v": tensors.v}
    if tensors.grad_out is not None:
        named["grad_out"] = tensors.grad_out
    return named


def _hostile_signs(case: Case, world: int, checked: dict, last: dict, inputs: dict, prints: dict, memory) -> list[str]:
    """What this rank saw that makes its numbers untrustworthy (empty: nothing)."""
    from attnbench.cp import check
    from attnbench.measure.integrity import changed
    from attnbench.tolerance import tolerances

    problems = []
    mutated = changed(inputs, prints)
    if mutated:
        problems.append(f"the local kernel changed its input shards in place ({', '.join(mutated)})")
    limits = tolerances(case.device, case.dtype, case.shape.head_dim)
    factor = check.tolerance_factor(world)
    for name in sorted(set(checked) & set(last)):
        a, b = last[name].double(), checked[name].double()
        scale = float(b.norm())
        diff = float((a - b).norm())
        rel = diff / scale if scale > 0 else diff
        tol = limits.get(name, 0.0) * factor
        if not math.isfinite(rel) or rel > tol:
            problems.append(f"{name} of the last timed iteration differs from the checked run "
                            f"(relative L2 {rel:.3g} > tolerance {tol:.3g})")
            break
    if memory is not None and memory.hwm_reset:
        problems.append("the memory high-water mark was reset during the measured call (/proc/self/clear_refs)")
    return problems


def _time(iteration: Callable[..., float], case: Case, device, last: dict | None = None) -> tuple[list[float], int]:
    """(this rank's timed samples, warm-up count); counts agreed by every rank. The last timed
    iteration's outputs go into ``last`` when given."""
    from attnbench.measure.timing import plan_iterations

    estimate = [iteration() for _ in range(2)]
    slowest = torch.tensor([max(estimate)], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    warmup, repeats = plan_iterations(float(slowest.item()), case.budget)
    warmup = max(0, warmup - len(estimate))
    for _ in range(warmup):
        iteration()
    samples = [iteration() for _ in range(repeats - 1)]
    return samples + [iteration(last)], warmup
