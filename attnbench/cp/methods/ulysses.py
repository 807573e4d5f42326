"""`ulysses`: DeepSpeed-Ulysses. All-to-all from sequence-sharded to head-sharded q, k, v,
attention over the whole sequence for 1/W of the heads, all-to-all back.

KV heads are repeated when the world size does not divide heads_kv (each rank needs whole KV
heads); heads_q must be divisible by the world size.
"""

from __future__ import annotations

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun, Plan, kv_repeat, ulysses_check, world_of
from attnbench.cp.dispatch import contiguous
from attnbench.cp.patterns import ulysses_comm, ulysses_in, ulysses_lse, ulysses_out
from attnbench.cp.schedule import Collective, Schedule
from attnbench.cp.slices import LocalMask


@register_cp_method("ulysses")
class Ulysses(CPMethod):
    name = "ulysses"
    description = "all-to-all sequence -> heads, full-sequence local attention, all-to-all back"

    def check(self, case):
        return ulysses_check(case, world_of(case))

    def plan(self, case, mask):
        ring = contiguous(mask.seqlen, 1)
        W = world_of(case)
        return Plan(layout=contiguous(mask.seqlen, W), ring=ring, ulysses=W, rings=())

    def prepare(self, ctx, plan):
        comm = ulysses_comm(ctx, ctx.world)
        rep = kv_repeat(ctx.case.shape.heads_kv, ctx.world)
        S = ctx.mask.seqlen
        local = LocalMask(ctx.mask.slices, S, S)

        def forward(q, k, v, need_lse):
            qh, kh, vh = ulysses_in(q, k, v, comm, rep)
            out, lse = ctx.step.attend(qh, kh, vh, local)
            return ulysses_out(out, comm), ulysses_lse(lse, comm) if need_lse else None

        return CPRun(forward)

    def expected_comm(self, case):
        W = world_of(case)
        return analytic.per_pass(case, analytic.ulysses_bytes(case, W, kv_repeat(case.shape.heads_kv, W)))

    def step_sources(self, case, plan, rank):
        return ((0,),)  # the whole sequence (the ring layout has one position)

    def schedule(self, case, plan):
        s, W = case.shape, world_of(case)
        rep = kv_repeat(s.heads_kv, W)
        pre = post = ()
        if W > 1:
            pre = (Collective("all_to_all", analytic.ulysses_in_bytes(case, W, rep), W, 1, "q, k, v to heads"),)
            post = (Collective("all_to_all", analytic.ulysses_out_bytes(case, W), W, 1, "output to tokens"),)
        return Schedule(heads_q=s.heads_q // W, heads_kv=s.heads_kv * rep // W, pre=pre, post=post)
