"""`ring_p2p`: ring attention. KV chunks go around the ring by batched isend/irecv, the next
transfer overlapped with the current step (double buffer), partial results merged by their
log-sum-exp; backward passes dK, dV around the ring the other way.

Tokens are dispatched by the ``dispatch`` parameter: auto (default) picks zigzag for causal
masks and per-document zigzag for document masks when that balances the area best.
"""

from __future__ import annotations

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun
from attnbench.cp.patterns import ring_pass
from attnbench.cp.slices import local_mask


@register_cp_method("ring_p2p")
class RingP2P(CPMethod):
    name = "ring_p2p"
    description = "KV around a ring (batched isend/irecv, overlapped), lse merge; zigzag / per-document balance"
    params = {"dispatch": "token split: auto, contiguous, zigzag or documents (default auto)"}

    def prepare(self, ctx, plan):
        W, r, runs = ctx.world, ctx.rank, plan.layout.runs
        masks = [local_mask(ctx.mask.slices, runs[r], runs[(r - t) % W]) for t in range(W)]

        def forward(q, k, v, need_lse):
            acc = ring_pass(q, k, v, masks, ctx.comm, (r + 1) % W, (r - 1) % W, ctx.kernel, ctx.scale)
            out, lse = acc.result(q.dtype)
            return out, lse if need_lse else None

        return CPRun(forward)

    def expected_comm(self, case):
        return analytic.per_pass(case, analytic.ring_bytes(case, 1, 1))
