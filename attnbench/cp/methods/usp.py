"""`usp`: Unified Sequence Parallelism. Ulysses inside groups of ``ulysses_degree`` ranks,
a ring across the W / u groups (2-D mesh: rank g*u + j is member j of the group at ring
position g). Each group holds a balanced token set (the ring-level dispatch), its members
split it evenly; after the all-to-all each member has 1/u of the heads over the group's
tokens and rings K, V with the same member of the other groups (attnbench.cp.ring: the
FA2 ring backward).

Default degree: the largest divisor of gcd(W, heads_kv) that fits in one node (the ranks per
node of the launch; all of them on one node) and leaves a ring of at least 2 ranks. So a
Ulysses group never spans nodes and never repeats KV heads unless asked to.
"""

from __future__ import annotations

import math

from attnbench.cp import analytic, register_cp_method
from attnbench.cp.base import CPMethod, CPRun, Plan, int_param, kv_repeat, param, ulysses_check, world_of
from attnbench.cp.dispatch import make_layout
from attnbench.cp.patterns import ulysses_comm, ulysses_in, ulysses_lse, ulysses_out
from attnbench.cp.ring import RingLevel, RingPlan, ring_attention
from attnbench.cp.schedule import Collective, RingSpec, Schedule
from attnbench.cp.slices import local_mask

DISPATCH_HELP = "ring-level token split: auto, contiguous, zigzag or documents (default auto)"
DEGREE_HELP = ("ranks per Ulysses group (divides W and heads_q; default: the largest divisor of "
               "gcd(W, heads_kv) within one node that leaves a ring of 2 or more)")


def ranks_per_node(case) -> int:
    spec = case.cp
    return spec.ranks_per_node or spec.world_size


def default_ulysses_degree(case) -> int:
    """Largest divisor of gcd(W, heads_kv) that is at most the ranks of one node and leaves a
    ring of at least 2 (1 at W = 1)."""
    W = world_of(case)
    g = math.gcd(W, case.shape.heads_kv)
    node = ranks_per_node(case)
    choices = [d for d in range(1, g + 1) if g % d == 0 and d <= node and (W // d >= 2 or W == 1)]
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
        return Plan(layout=ring.split(u), ring=ring, ulysses=u, rings=self.ring_sizes(case))

    def expected_comm(self, case):
        u = self.degree(case)
        rep = kv_repeat(case.shape.heads_kv, u)
        return analytic.ring_pass_bytes(case, self.ring_sizes(case), u=u, rep=rep)

    def ring_specs(self, case) -> tuple[RingSpec, ...]:
        """The ring levels (outermost first): ring positions are Ulysses groups, u ranks apart."""
        u = self.degree(case)
        specs, stride = [], u
        for size in reversed(self.ring_sizes(case)):
            specs.append(RingSpec(size, stride))
            stride *= size
        return tuple(reversed(specs))

    def schedule(self, case, plan):
        s, u = case.shape, plan.ulysses
        rep = kv_repeat(s.heads_kv, u)
        chunk, grad = analytic.ring_chunk_bytes(case, u, rep)
        uly = u > 1
        return Schedule(
            heads_q=s.heads_q // u, heads_kv=s.heads_kv * rep // u,
            pre=(Collective("all_to_all", analytic.ulysses_in_bytes(case, u, rep), u, 1, "q, k, v to heads"),) if uly else (),
            post=(Collective("all_to_all", analytic.ulysses_out_bytes(case, u), u, 1, "output to tokens"),) if uly else (),
            rings=self.ring_specs(case), chunk_bytes=chunk, grad_bytes=grad,
        )


@register_cp_method("usp")
class USP(UlyssesRing):
    name = "usp"
    description = "Ulysses inside groups x ring across groups (2-D mesh); split = ulysses_degree"
    params = {"ulysses_degree": DEGREE_HELP, "dispatch": DISPATCH_HELP}

    def ring_sizes(self, case):
        return (world_of(case) // self.degree(case),)

    def prepare(self, ctx, plan):
        u = plan.ulysses
        r = ctx.world // u
        g, j = divmod(ctx.rank, u)
        comm_u = ulysses_comm(ctx, u)
        rep = kv_repeat(ctx.case.shape.heads_kv, u)
        runs = plan.ring.runs
        ring = RingPlan(
            levels=(RingLevel(r, ((g + 1) % r) * u + j, ((g - 1) % r) * u + j),),
            masks=tuple(local_mask(ctx.mask.slices, runs[g], runs[src])
                        for (src,) in self.step_sources(ctx.case, plan, ctx.rank)),
        )

        def forward(q, k, v, need_lse):
            qh, kh, vh = ulysses_in(q, k, v, comm_u, rep)
            out, lse = ring_attention(qh, kh, vh, ring, ctx.comm, ctx.step)
            return ulysses_out(out, comm_u), ulysses_lse(lse, comm_u) if need_lse else None

        return CPRun(forward)

    def step_sources(self, case, plan, rank):
        r = plan.ring.world
        g = rank // plan.ulysses
        return tuple(((g - t) % r,) for t in range(r))
