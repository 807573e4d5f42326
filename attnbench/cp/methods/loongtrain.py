"""`loongtrain`: Ulysses plus a double ring (LoongTrain). The W / u ring positions form
windows of ``window`` consecutive positions: K, V go around an inner ring inside the window,
and between inner rounds the window's original chunks move one window on along an outer ring
(started at the beginning of the round, so it overlaps the whole inner round). Position
``a*w + i`` at outer round o, inner step t holds the chunk of position
``((a - o) mod nw) * w + (i - t) mod w``: every chunk exactly once. Backward: the same
double ring with the float32 dK/dV accumulators (attnbench.cp.ring).

Defaults: the Ulysses degree as `usp`; the window is the smallest divisor of the ring length
r that is at least sqrt(r) and below r, so there are always two windows or more (r >= 2): a
double ring, not `usp` under another name. A window is ``w * u`` consecutive ranks: inside
one node when that fits.
"""

from __future__ import annotations

from attnbench.cp import register_cp_method
from attnbench.cp.base import CPRun, int_param, kv_repeat, world_of
from attnbench.cp.methods.usp import DEGREE_HELP, DISPATCH_HELP, UlyssesRing
from attnbench.cp.patterns import ulysses_comm, ulysses_in, ulysses_lse, ulysses_out
from attnbench.cp.ring import RingLevel, RingPlan, ring_attention
from attnbench.cp.slices import local_mask


def default_window(ring: int) -> int:
    """Smallest divisor of the ring length that is at least its square root and below it
    (1 for rings of 1 to 3: their outer ring is the whole ring)."""
    below = [d for d in range(1, ring) if ring % d == 0 and d * d >= ring]
    return min(below) if below else 1


@register_cp_method("loongtrain")
class LoongTrain(UlyssesRing):
    name = "loongtrain"
    description = "Ulysses x double ring (inner ring within a window, outer ring across windows)"
    params = {
        "ulysses_degree": DEGREE_HELP,
        "window": "ring positions per inner ring (divides W / ulysses_degree; default: the smallest "
                  "divisor >= sqrt(ring) below the ring, so 2 windows or more)",
        "dispatch": DISPATCH_HELP,
    }

    def window(self, case) -> int:
        r = world_of(case) // max(1, self.degree(case))
        return int_param(case, "window", default_window(max(r, 1)))

    def ring_sizes(self, case):
        r = world_of(case) // self.degree(case)
        w = self.window(case)
        return (r // w, w)

    def check(self, case):
        reason = super().check(case)
        if reason:
            return reason
        r = world_of(case) // self.degree(case)
        w = self.window(case)
        if w < 1 or r % w:
            return f"window {w} does not divide the ring length {r} (W / ulysses_degree)"
        return None

    def prepare(self, ctx, plan):
        u = plan.ulysses
        nw, w = self.ring_sizes(ctx.case)
        g, j = divmod(ctx.rank, u)
        a, i = divmod(g, w)
        comm_u = ulysses_comm(ctx, u)
        rep = kv_repeat(ctx.case.shape.heads_kv, u)
        runs = plan.ring.runs
        rank_of = lambda aa, ii: ((aa % nw) * w + ii % w) * u + j  # noqa: E731
        ring = RingPlan(
            levels=(RingLevel(nw, rank_of(a + 1, i), rank_of(a - 1, i)), RingLevel(w, rank_of(a, i + 1), rank_of(a, i - 1))),
            masks=tuple(local_mask(ctx.mask.slices, runs[g], runs[src])
                        for (src,) in self.step_sources(ctx.case, plan, ctx.rank)),
        )

        def forward(q, k, v, need_lse):
            qh, kh, vh = ulysses_in(q, k, v, comm_u, rep)
            out, lse = ring_attention(qh, kh, vh, ring, ctx.comm, ctx.step)
            return ulysses_out(out, comm_u), ulysses_lse(lse, comm_u) if need_lse else None

        return CPRun(forward)

    def step_sources(self, case, plan, rank):
        nw, w = self.ring_sizes(case)
        a, i = divmod(rank // plan.ulysses, w)
        return tuple(((((a - o) % nw) * w + (i - t) % w),) for o in range(nw) for t in range(w))
