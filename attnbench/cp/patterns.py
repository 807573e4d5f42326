"""Building blocks shared by the CP methods: the Ulysses head/sequence all-to-alls and the
rings' plans (the ring itself is attnbench.cp.ring). Methods compose these; nothing here
knows which method calls it.
"""

from __future__ import annotations

import torch

from attnbench.cp.comm import Comm, all_to_all, subgroups


def ulysses_comm(ctx, degree: int) -> Comm | None:
    """The Ulysses group of this rank (ranks ``g*u .. g*u+u-1``); None when ``degree`` is 1."""
    if degree == 1:
        return None
    partition = [list(range(g * degree, (g + 1) * degree)) for g in range(ctx.world // degree)]
    return ctx.comm.sub(subgroups(partition))


def ulysses_in(q, k, v, comm: Comm | None, kv_repeat: int):
    """Sequence-sharded q [B, Hq, L, D], k, v [B, Hkv, L, D] -> head-sharded over the group,
    sequence ``u * L``: one all-to-all carrying q, k and v together (one collective in each
    direction keeps the backward order identical on every rank)."""
    if kv_repeat > 1:
        k = k.repeat_interleave(kv_repeat, dim=1)
        v = v.repeat_interleave(kv_repeat, dim=1)
    if comm is None:
        return q, k, v
    u = comm.size
    B, Hq, L, D = q.shape
    Hk = k.shape[1]
    hq, hk = Hq // u, Hk // u
    packed = torch.cat([q.reshape(B, u, hq, L, D), k.reshape(B, u, hk, L, D), v.reshape(B, u, hk, L, D)], dim=2)
    heads = all_to_all(packed.reshape(B, u * (hq + 2 * hk), L, D), comm, scatter_dim=1, gather_dim=2)
    return heads.split([hq, hk, hk], dim=1)


def ulysses_out(out, comm: Comm | None):
    """Head-sharded [B, Hq/u, u*L, D] -> sequence-sharded [B, Hq, L, D]."""
    return out if comm is None else all_to_all(out, comm, scatter_dim=2, gather_dim=1)


def ulysses_lse(lse, comm: Comm | None):
    """The lse back to sequence sharding (accuracy checks only; not differentiable)."""
    if comm is None:
        return lse
    with torch.no_grad():
        return comm.all_to_all(lse.contiguous(), 2, 1, "forward")


