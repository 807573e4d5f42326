"""`loongtrain`: Ulysses plus a double ring (LoongTrain). The W / u ring positions form
windows of ``window`` consecutive positions: K, V go around an inner ring inside the window,
and between inner rounds the window's original chunks move one window on along an outer ring
(started at the beginning of the round, so it overlaps the whole inner round). Position
``a*w + i`` at outer round o, inner step t holds the chunk of position
``((a - o) mod nw) * w + (i - t) mod w``: every chunk exactly once.
"""

from __future__ import annotations

import torch

from attnbench.cp import register_cp_method
from attnbench.cp.base import CPRun, int_param, kv_repeat, world_of
from attnbench.cp.comm import ring_shift
from attnbench.cp.local import Partial, attend
from attnbench.cp.methods.usp import DISPATCH_HELP, UlyssesRing
from attnbench.cp.patterns import ulysses_comm, ulysses_in, ulysses_lse, ulysses_out
from attnbench.cp.slices import local_mask


def default_window(ring: int) -> int:
    """Smallest divisor of the ring length that is at least its square root."""
    return min(d for d in range(1, ring + 1) if ring % d == 0 and d * d >= ring)


@register_cp_method("loongtrain")
class LoongTrain(UlyssesRing):
    name = "loongtrain"
    description = "Ulysses x double ring (inner ring within a window, outer ring across windows)"
    params = {
        "ulysses_degree": "ranks per Ulysses group (divides W and heads_q)",
        "window": "ring positions per inner ring (divides W / ulysses_degree)",
        "dispatch": DISPATCH_HELP,
    }

    def window(self, case) -> int:
        r = world_of(case) // max(1, self.degree(case))
        return int_param(case, "window", default_window(max(r, 1)))

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
        r = ctx.world // u
        w = self.window(ctx.case)
        nw = r // w
        g, j = divmod(ctx.rank, u)
        a, i = divmod(g, w)
        comm_u = ulysses_comm(ctx, u)
        rep = kv_repeat(ctx.case.shape.heads_kv, u)
        runs = plan.ring.runs
        masks = [[local_mask(ctx.mask.slices, runs[g], runs[((a - o) % nw) * w + (i - t) % w]) for t in range(w)]
                 for o in range(nw)]
        rank_of = lambda aa, ii: ((aa % nw) * w + ii % w) * u + j  # noqa: E731
        inner = (rank_of(a, i + 1), rank_of(a, i - 1))
        outer = (rank_of(a + 1, i), rank_of(a - 1, i))

        def forward(q, k, v, need_lse):
            qh, kh, vh = ulysses_in(q, k, v, comm_u, rep)
            acc = Partial()
            held = torch.stack([kh, vh])  # this window position's chunk of the current outer round
            for o in range(nw):
                nxt_outer = ring_shift(held, ctx.comm, *outer, wait=False) if o + 1 < nw else None
                cur = held
                for t in range(w):
                    nxt = ring_shift(cur, ctx.comm, *inner, wait=False) if t + 1 < w else None
                    acc.add(*attend(qh, cur[0], cur[1], masks[o][t], ctx.scale, ctx.kernel))
                    if nxt is not None:
                        ctx.comm.wait(nxt)
                        cur = nxt
                if nxt_outer is not None:
                    ctx.comm.wait(nxt_outer)
                    held = nxt_outer
            out, lse = acc.result(q.dtype)
            return ulysses_out(out, comm_u), ulysses_lse(lse, comm_u) if need_lse else None

        return CPRun(forward)
