"""`ring_allgather`: the Llama-3 recipe. One all-gather of K and V, local attention of the
rank's (balanced) query chunks against the whole sequence; backward reduce-scatters dK, dV.

By design every rank holds the WHOLE sequence's K and V (O(S) memory per rank, kept for
backward) and computes its step with it in one kernel call: no overlap of the all-gather
with compute. That is the recipe's trade (one collective, simple kernels), and what sets it
apart from the rings, whose memory per rank stays O(S / W).

The gathered keys are in dispatched (rank-major) order, so the local mask is the union over
source ranks of (rank's queries x source's keys), each placed at the source's offset.
"""

from __future__ import annotations

import torch

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun
from attnbench.cp.comm import all_gather
from attnbench.cp.schedule import Collective, Schedule
from attnbench.cp.slices import LocalMask, local_slices
from attnbench.masks.slices import SliceTable


def gathered_mask(table, q_runs, all_runs) -> LocalMask:
    """Queries ``q_runs`` against the concatenation of every rank's keys (rank order)."""
    parts, offset = [], 0
    for runs in all_runs:
        t = local_slices(table, q_runs, runs)
        parts.append(SliceTable(t.q0, t.q1, t.k0 + offset, t.k1 + offset, t.kind))
        offset += int((runs[:, 1] - runs[:, 0]).sum())
    q_len = int((q_runs[:, 1] - q_runs[:, 0]).sum())
    return LocalMask(SliceTable.concat(parts).nonempty(), q_len, offset)


@register_cp_method("ring_allgather")
class RingAllGather(CPMethod):
    name = "ring_allgather"
    description = "all-gather K, V (O(S) KV per rank by design); local attention of the rank's queries; reduce-scatter dK, dV (Llama 3)"
    params = {"dispatch": "token split: auto, contiguous, zigzag or documents (default auto)"}

    def prepare(self, ctx, plan):
        local = gathered_mask(ctx.mask.slices, plan.layout.runs[ctx.rank], plan.layout.runs)

        def forward(q, k, v, need_lse):
            kv = all_gather(torch.stack([k, v]), ctx.comm, dim=3)
            out, lse = ctx.step.attend(q, kv[0], kv[1], local)
            return out, lse if need_lse else None

        return CPRun(forward)

    def expected_comm(self, case):
        return analytic.per_pass(case, analytic.allgather_bytes(case))

    def step_sources(self, case, plan, rank):
        return (tuple(range(plan.layout.world)),)  # one call over every rank's keys

    def schedule(self, case, plan):
        s, W = case.shape, plan.layout.world
        pre = (Collective("all_gather", analytic.allgather_bytes(case)[0], W, 1, "K, V of every rank"),) if W > 1 else ()
        return Schedule(heads_q=s.heads_q, heads_kv=s.heads_kv, pre=pre)
