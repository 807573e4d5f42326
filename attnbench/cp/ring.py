"""Ring attention as one autograd Function: the forward and backward people train with.

K and V travel (as one tensor) around a ring of ranks, or around nested rings (LoongTrain's
double ring: an inner ring inside a window, an outer ring across windows): :class:`RingPlan`
lists the levels, outermost first, and the local mask of every step in visiting order. At
each level a rank sends the chunk it holds to ``dst`` and receives the next from ``src``
while it computes on the current one (the transfer in flight, two buffers alive).

Forward (:func:`ring_attention`): partial results merged by log-sum-exp in float32; the
Function keeps only the rank's q, k, v, its output and its lse for backward (no per-step
partials, no received chunks), as ring-flash-attention and TransformerEngine do.

Backward: the chunks go around again; each step's dK/dV (float32) is added to an
accumulator that travels with its chunk, one hop behind it: at every level of ``n`` ranks
the accumulator makes ``n`` hops and arrives back at the rank that held the chunk when the
level began, with every rank's contribution; an inner level's result is the contribution
handed to its outer level. Every transfer is asynchronous and waited for one step later,
after that step's compute (double buffered). dQ stays on the rank. The step itself is the
kernel's ``attend_slices_backward`` (attnbench.cp.local.LocalStep.backward).

Bytes per rank (the analytic figures of attnbench.cp.analytic.ring_bytes): forward
``sum_l (n_l - 1) * prod_{m<l} n_m`` chunk transfers; backward the same transfers of K, V
plus ``sum_{l: n_l > 1} n_l * prod_{m<l} n_m`` transfers of the float32 accumulators.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch

from attnbench.cp.comm import Comm
from attnbench.cp.local import LocalStep, Partial
from attnbench.cp.slices import LocalMask


@dataclass(frozen=True)
class RingLevel:
    """One ring: ``size`` ranks; this rank sends to global rank ``dst``, receives from ``src``."""

    size: int
    dst: int
    src: int


@dataclass(frozen=True, eq=False)
class RingPlan:
    """Nested rings (outermost first) and the local mask of every step, in visiting order:
    step ``(t_0, t_1, ...)`` is ``masks[t_0 * n_1 * n_2 ... + t_1 * n_2 ... + ...]``."""

    levels: tuple[RingLevel, ...]
    masks: tuple[LocalMask, ...]

    def __post_init__(self) -> None:
        steps = 1
        for level in self.levels:
            steps *= level.size
        if steps != len(self.masks):
            raise ValueError(f"{len(self.masks)} step masks for rings of {[lv.size for lv in self.levels]}")


def transfers(sizes: Sequence[int]) -> tuple[int, int]:
    """(K/V chunk transfers, accumulator transfers) per rank of one pass over rings ``sizes``."""
    kv, acc, outer = 0, 0, 1
    for n in sizes:
        kv += (n - 1) * outer
        acc += n * outer if n > 1 else 0
        outer *= n
    return kv, acc


def _forward(q, kv, plan: RingPlan, comm: Comm, step: LocalStep):
    acc = Partial()
    index = itertools.count()
    last = len(plan.levels) - 1

    def visit(level: int, held: torch.Tensor) -> None:
        ring = plan.levels[level]
        cur = held
        for t in range(ring.size):
            nxt = comm.exchange(cur, ring.dst, ring.src, "forward", wait=False) if t + 1 < ring.size else None
            if level < last:
                visit(level + 1, cur)
            else:
                result = step.forward(q, cur[0], cur[1], plan.masks[next(index)])
                if result is not None:
                    acc.add(*result)
            if nxt is not None:
                comm.wait(nxt)
                cur = nxt

    visit(0, kv)
    return acc.result(q)


def _backward(q, kv, out, lse, dout, plan: RingPlan, comm: Comm, step: LocalStep):
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    index = itertools.count()
    last = len(plan.levels) - 1

    def visit(level: int, held: torch.Tensor) -> torch.Tensor:
        """The float32 dK/dV of ``held`` summed over this level's ring, here."""
        ring = plan.levels[level]
        cur, incoming, grad = held, None, None
        for t in range(ring.size):
            nxt = comm.exchange(cur, ring.dst, ring.src, "backward", wait=False) if t + 1 < ring.size else None
            if level < last:
                grad = visit(level + 1, cur)
            else:
                result = step.backward(q, cur[0], cur[1], out, lse, dout, plan.masks[next(index)])
                grad = None
                if result is not None:
                    dq.add_(result[0])
                    grad = torch.stack([result[1], result[2]])
            if incoming is not None:  # the accumulator of `cur`, one hop behind it
                comm.wait(incoming)
                grad = incoming if grad is None else grad.add_(incoming)
            if grad is None:
                grad = torch.zeros(cur.shape, dtype=torch.float32, device=cur.device)
            if ring.size > 1:
                incoming = comm.exchange(grad, ring.dst, ring.src, "backward", wait=False)
            if nxt is not None:
                comm.wait(nxt)
                cur = nxt
        if incoming is None:
            return grad
        comm.wait(incoming)
        return incoming

    dkv = visit(0, kv)
    return dq, dkv


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: RingPlan, comm: Comm, step: LocalStep):
        out, lse = _forward(q, torch.stack([k, v]), plan, comm, step)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.comm, ctx.step = plan, comm, step
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dkv = _backward(q, torch.stack([k, v]), out, lse, dout.contiguous(), ctx.plan, ctx.comm, ctx.step)
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None, None


def ring_attention(q, k, v, plan: RingPlan, comm: Comm, step: LocalStep) -> tuple[torch.Tensor, torch.Tensor]:
    """(out in q's dtype, lse float32, not differentiable) of the rank's queries over every
    chunk of the rings; differentiable in q, k, v."""
    return _RingAttention.apply(q, k, v, plan, comm, step)
