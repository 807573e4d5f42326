"""`ring_p2p`: ring attention. KV chunks go around the ring by batched isend/irecv, the next
transfer overlapped with the current step (double buffer), partial results merged by their
log-sum-exp. Backward is FlashAttention-2's ring backward (attnbench.cp.ring): only q, k, v,
out and lse are kept; K, V go around again with the float32 dK/dV accumulators.

Tokens are dispatched by the ``dispatch`` parameter: auto (default) picks zigzag for causal
masks and per-document zigzag for document masks when that balances the area best.
"""

from __future__ import annotations

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun, world_of
from attnbench.cp.ring import RingLevel, RingPlan, ring_attention
from attnbench.cp.schedule import RingSpec, Schedule
from attnbench.cp.slices import local_mask


@register_cp_method("ring_p2p")
class RingP2P(CPMethod):
    name = "ring_p2p"
    description = "KV around a ring (batched isend/irecv, overlapped), lse merge; FA2 ring backward; zigzag / per-document balance"
    params = {"dispatch": "token split: auto, contiguous, zigzag or documents (default auto)"}

    def ring_sizes(self, case):
        return (world_of(case),)

    def prepare(self, ctx, plan):
        W, r, runs = ctx.world, ctx.rank, plan.layout.runs
        ring = RingPlan(
            levels=(RingLevel(W, (r + 1) % W, (r - 1) % W),),
            masks=tuple(local_mask(ctx.mask.slices, runs[r], runs[src])
                        for (src,) in self.step_sources(ctx.case, plan, r)),
        )

        def forward(q, k, v, need_lse):
            out, lse = ring_attention(q, k, v, ring, ctx.comm, ctx.step)
            return out, lse if need_lse else None

        return CPRun(forward)

    def expected_comm(self, case):
        return analytic.ring_pass_bytes(case, self.ring_sizes(case), u=1, rep=1)

    def step_sources(self, case, plan, rank):
        W = plan.layout.world
        return tuple(((rank - t) % W,) for t in range(W))

    def schedule(self, case, plan):
        chunk, grad = analytic.ring_chunk_bytes(case, u=1, rep=1)
        return Schedule(heads_q=case.shape.heads_q, heads_kv=case.shape.heads_kv,
                        rings=(RingSpec(world_of(case), 1),), chunk_bytes=chunk, grad_bytes=grad)
