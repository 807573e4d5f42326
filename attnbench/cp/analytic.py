"""Analytic communication per rank per pass: what each method must send, from the shape.

Same convention as the counter (attnbench.cp.comm): payload bytes this rank sends to other
ranks, and collective calls (a batched isend/irecv counts once).

- Ulysses all-to-alls: q, k, v (KV repeated ``rep`` times) in, the output back; backward
  runs them in reverse with gradients of the same sizes.
- All-gather of K, V; backward a reduce-scatter of dK, dV of the same size (input dtype).
- Rings (attnbench.cp.ring, nested sizes ``n_0, n_1, ...``): forward
  ``sum_l (n_l - 1) prod_{m<l} n_m`` transfers of a K+V chunk (input dtype); backward the
  same K+V transfers again plus ``sum_{l: n_l > 1} n_l prod_{m<l} n_m`` transfers of the
  chunk's dK+dV accumulator in float32.

Notation: B batch, Hq / Hkv heads, D head dim, e bytes per element, S global length, W world,
u Ulysses degree, r = W / u ring length, rep the KV-head repetition when u does not divide
Hkv. Per rank: L = S / W tokens before the Ulysses all-to-all, S / r after.
"""

from __future__ import annotations

from typing import Sequence

import torch

from attnbench.cases import Case, torch_dtype
from attnbench.cp.ring import transfers

ACCUMULATOR_BYTES = 4  # float32 dK/dV travelling with the chunk in the ring backward


def _elem(case: Case) -> int:
    return torch.empty((), dtype=torch_dtype(case.dtype)).element_size()


def ulysses_in_bytes(case: Case, u: int, rep: int) -> int:
    """The all-to-all of q, k, v (KV repeated ``rep`` times) into head sharding."""
    s = case.shape
    L = s.seqlen // case.cp.world_size
    packed = s.batch * (s.heads_q + 2 * s.heads_kv * rep) * L * s.head_dim * _elem(case)
    return packed * (u - 1) // u


def ulysses_out_bytes(case: Case, u: int) -> int:
    """The all-to-all of the output back to sequence sharding."""
    s = case.shape
    L = s.seqlen // case.cp.world_size
    return s.batch * s.heads_q * L * s.head_dim * _elem(case) * (u - 1) // u


def ulysses_bytes(case: Case, u: int, rep: int) -> tuple[int, int]:
    """One all-to-all of q, k, v (KV repeated ``rep`` times) in, one of the output back."""
    if u == 1:
        return 0, 0
    return ulysses_in_bytes(case, u, rep) + ulysses_out_bytes(case, u), 2


def ring_chunk_elements(case: Case, u: int, rep: int) -> int:
    """Elements of one K+V chunk of a ring: S / r tokens, Hkv * rep / u heads."""
    s = case.shape
    r = case.cp.world_size // u
    return 2 * s.batch * (s.heads_kv * rep // u) * (s.seqlen // r) * s.head_dim


def ring_bytes(case: Case, sizes: Sequence[int], u: int, rep: int) -> dict[str, tuple[int, int]]:
    """pass -> (bytes, calls) of the rings alone (forward; backward with the accumulators)."""
    chunk = ring_chunk_elements(case, u, rep)
    kv, acc = transfers(sizes)
    return {"forward": (kv * chunk * _elem(case), kv),
            "backward": (kv * chunk * _elem(case) + acc * chunk * ACCUMULATOR_BYTES, kv + acc)}


def ring_chunk_bytes(case: Case, u: int, rep: int) -> tuple[int, int]:
    """(K+V chunk in the input dtype, its float32 dK+dV accumulator) of one ring transfer."""
    chunk = ring_chunk_elements(case, u, rep)
    return chunk * _elem(case), chunk * ACCUMULATOR_BYTES


def allgather_bytes(case: Case) -> tuple[int, int]:
    """One all-gather of the K+V shard (backward: one reduce-scatter of dK+dV)."""
    s = case.shape
    W = case.cp.world_size
    if W == 1:
        return 0, 0
    shard = 2 * s.batch * s.heads_kv * (s.seqlen // W) * s.head_dim * _elem(case)
    return (W - 1) * shard, 1


def _add(*parts: tuple[int, int]) -> tuple[int, int]:
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def per_pass(case: Case, *parts: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Parts that are the same in both directions: the forward, and again for the backward
    when the pass has one."""
    total = _add(*parts)
    out = {"forward": total}
    if case.pass_.needs_grad:
        out["backward"] = total
    return out


def ring_pass_bytes(case: Case, sizes: Sequence[int], u: int, rep: int) -> dict[str, tuple[int, int]]:
    """A Ulysses x ring method: the all-to-alls (both directions alike) plus the rings."""
    uly = ulysses_bytes(case, u, rep)
    rings = ring_bytes(case, sizes, u, rep)
    out = {"forward": _add(uly, rings["forward"])}
    if case.pass_.needs_grad:
        out["backward"] = _add(uly, rings["backward"])
    return out
