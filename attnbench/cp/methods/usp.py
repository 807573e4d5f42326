"""`usp`: Unified Sequence Parallelism. Ulysses inside groups of ``ulysses_degree`` ranks,
a ring across the W / u groups (2-D mesh: rank g*u + j is member j of the group at ring
position g). Each group holds a balanced token set (the ring-level dispatch), its members
split it evenly; after the all-to-all each member has 1/u of the heads over the group's
tokens and rings K, V with the same member of the other groups.
"""

from __future__ import annotations

import math

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun, Plan, int_param, kv_repeat, param, ulysses_check, world_of
from attnbench.cp.dispatch import make_layout
from attnbench.cp.patterns import ring_pass, ulysses_comm, ulysses_in, ulysses_lse, ulysses_out
from attnbench.cp.slices import local_mask

DISPATCH_HELP = "ring-level token split: auto, contiguous, zigzag or documents (default auto)"


def default_ulysses_degree(case) -> int:
    """Largest divisor of gcd(W, heads_q) that leaves a ring of at least 2 (1 at W = 1)."""
    W = world_of(case)
    g = math.gcd(W, case.shape.heads_q)
    choices = [d for d in range(1, g + 1) if g % d == 0 and (W // d >= 2 or W == 1)]
    return max(choices) if choices else 1


class UlyssesRing(CPMethod):
    """Shared planning of the Ulysses x ring methods."""

    def degree(self, case) -> int:
        return int_param(case, "ulysses_degree", default_ulysses_degree(case))

    def check(self, case):
        return ulysses_check(case, self.degree(case))

    def plan(self, case, mask):
        u = self.degree(case)
        ring = make_layout(mask, world_of(case) // u, str(param(case, "dispatch", "auto")))
        return Plan(layout=ring.split(u), ring=ring, ulysses=u)

    def expected_comm(self, case):
        u = self.degree(case)
        rep = kv_repeat(case.shape.heads_kv, u)
        return analytic.per_pass(case, analytic.ulysses_bytes(case, u, rep), analytic.ring_bytes(case, u, rep))


@register_cp_method("usp")
class USP(UlyssesRing):
    name = "usp"
    description = "Ulysses inside groups x ring across groups (2-D mesh); split = ulysses_degree"
    params = {"ulysses_degree": "ranks per Ulysses group (divides W and heads_q)", "dispatch": DISPATCH_HELP}

    def prepare(self, ctx, plan):
        u = plan.ulysses
        r = ctx.world // u
        g, j = divmod(ctx.rank, u)
        comm_u = ulysses_comm(ctx, u)
        rep = kv_repeat(ctx.case.shape.heads_kv, u)
        runs = plan.ring.runs
        masks = [local_mask(ctx.mask.slices, runs[g], runs[(g - t) % r]) for t in range(r)]
        dst, src = ((g + 1) % r) * u + j, ((g - 1) % r) * u + j

        def forward(q, k, v, need_lse):
            qh, kh, vh = ulysses_in(q, k, v, comm_u, rep)
            out, lse = ring_pass(qh, kh, vh, masks, ctx.comm, dst, src, ctx.kernel, ctx.scale).result(q.dtype)
            return ulysses_out(out, comm_u), ulysses_lse(lse, comm_u) if need_lse else None

        return CPRun(forward)
