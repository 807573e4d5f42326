"""Analytic communication per rank per pass: what each method must send, from the shape.

Same convention as the counter (attnbench.cp.comm): payload bytes this rank sends to other
ranks, and collective calls (a batched isend/irecv counts once). Backward mirrors forward in
every method here: the all-to-alls run in reverse, all-gather becomes reduce-scatter of the
same size, and each ring shift sends the gradient of what it carried back the other way.

Notation: B batch, Hq / Hkv heads, D head dim, e bytes per element, S global length, W world,
u Ulysses degree, r = W / u ring length, rep the KV-head repetition when u does not divide
Hkv. Per rank: L = S / W tokens before the Ulysses all-to-all, S / r after.
"""

from __future__ import annotations

import torch

from attnbench.cases import Case, torch_dtype


def _elem(case: Case) -> int:
    return torch.empty((), dtype=torch_dtype(case.dtype)).element_size()


def ulysses_bytes(case: Case, u: int, rep: int) -> tuple[int, int]:
    """One all-to-all of q, k, v (KV repeated ``rep`` times) in, one of the output back."""
    if u == 1:
        return 0, 0
    s = case.shape
    L = s.seqlen // case.cp.world_size
    e = _elem(case)
    packed = s.batch * (s.heads_q + 2 * s.heads_kv * rep) * L * s.head_dim * e
    out = s.batch * s.heads_q * L * s.head_dim * e
    return packed * (u - 1) // u + out * (u - 1) // u, 2


def ring_bytes(case: Case, u: int, rep: int) -> tuple[int, int]:
    """r - 1 shifts of a K+V chunk: S / r tokens, Hkv * rep / u heads."""
    s = case.shape
    r = case.cp.world_size // u
    if r == 1:
        return 0, 0
    chunk = 2 * s.batch * (s.heads_kv * rep // u) * (s.seqlen // r) * s.head_dim * _elem(case)
    return (r - 1) * chunk, r - 1


def allgather_bytes(case: Case) -> tuple[int, int]:
    """One all-gather of the K+V shard (backward: one reduce-scatter of dK+dV)."""
    s = case.shape
    W = case.cp.world_size
    if W == 1:
        return 0, 0
    shard = 2 * s.batch * s.heads_kv * (s.seqlen // W) * s.head_dim * _elem(case)
    return (W - 1) * shard, 1


def per_pass(case: Case, *parts: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Sum of parts for the forward; the same again for the backward when the pass has one."""
    total = (sum(p[0] for p in parts), sum(p[1] for p in parts))
    out = {"forward": total}
    if case.pass_.needs_grad:
        out["backward"] = total
    return out
