"""Host-side schedule of the slice-driven kernel: which key blocks each query block visits.

Built with numpy from a mask's slices in O(blocks touched) time and memory (never from a
dense mask). For block sizes ``(bm, bn)`` every (slice, query block, key block) triple whose
intersection is non-empty is enumerated (only the key blocks the slice's diagonal band can
reach from the rows of the query block), its exact area computed in closed form
(:func:`attnbench.masks.slices.band_area`), and the triples grouped by
``(mask head, query block, key block)``:

- a block whose allowed pairs add up to its whole (edge-cut) area is FULL: the kernel runs it
  without any element-wise mask;
- any other block is PARTIAL and keeps the list of slices that touch it (its *rules*); the
  kernel allows element ``(i, j)`` where some rule has ``q0 <= i < q1``, ``k0 <= j < k1``
  and ``lo <= j - i <= hi``.

Two orientations of the same blocks are produced: per query block (forward and dq: the key
blocks to visit) and per key block (dk/dv: the query blocks that touch it, the "transposed"
schedule). Per-head (block-sparse) masks get one schedule row per head: row
``head * n_blocks + block``; head-shared masks have one head.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from attnbench.masks.slices import band_area


@dataclass(frozen=True, eq=False)
class Orientation:
    """CSR lists for one orientation. Row ``r = head * n_rows + block``.

    ``full_idx[full_ptr[r]:full_ptr[r+1]]`` are the other-axis blocks visited unmasked;
    ``part_idx[part_ptr[r]:part_ptr[r+1]]`` the partial ones, entry ``e`` with rules
    ``rule_idx[part_r0[e]:part_r1[e]]`` (indices into ``Schedule.rules``).
    """

    full_ptr: np.ndarray
    full_idx: np.ndarray
    part_ptr: np.ndarray
    part_idx: np.ndarray
    part_r0: np.ndarray
    part_r1: np.ndarray


@dataclass(frozen=True, eq=False)
class Schedule:
    seqlen: int
    heads: int  # mask heads: 1 (shared) or heads_q (per-head masks)
    block_m: int
    block_n: int
    n_qblocks: int
    n_kblocks: int
    rules: np.ndarray  # int32 [n_slices, 6]: q0, q1, k0, k1, lo, hi (lo/hi clipped to +-(S+1))
    rule_idx: np.ndarray  # int32: slice ids of the partial blocks' rules
    by_q: Orientation  # per query block: key blocks (forward, dq)
    by_k: Orientation  # per key block: query blocks (dk, dv)
    n_full: int
    n_partial: int

    @property
    def blocks_visited(self) -> int:
        return self.n_full + self.n_partial

    def density(self) -> float:
        """Fraction of the ``heads x nqb x nkb`` block grid that is visited."""
        return self.blocks_visited / max(1, self.heads * self.n_qblocks * self.n_kblocks)


def _expand(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value) of every integer of the ranges ``[start, stop)``."""
    counts = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, start[owner] + (np.arange(len(owner)) - first)


def _csr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=ptr[1:])
    return ptr.astype(np.int32)


def _i32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int32)


def build_schedule(slices, seqlen: int, heads: int, block_m: int, block_n: int) -> Schedule:
    """Schedule of a slice table (``attnbench.masks.SliceTable``) for blocks ``block_m x block_n``."""
    S = int(seqlen)
    if block_m < 1 or block_n < 1:
        raise ValueError("block sizes must be >= 1")
    if S >= 2**30:
        raise ValueError("triton_slices indexes with int32: seqlen must be < 2**30")
    nqb, nkb = -(-S // block_m), -(-S // block_n)
    t = slices
    n = len(t)
    head = np.zeros(n, dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    if n and (head.min() < 0 or head.max() >= heads):
        raise ValueError(f"slice heads outside [0, {heads})")
    big = S + 1
    lo = np.clip(t.lo, -big, big)
    hi = np.clip(t.hi, -big, big)
    q0, q1, k0, k1 = t.q0, t.q1, t.k0, t.k1

    # level 1: (slice, query block), rows [a, b) of the slice inside the block
    own, qb = _expand(q0 // block_m, (q1 - 1) // block_m + 1)
    a = np.maximum(q0[own], qb * block_m)
    b = np.minimum(q1[own], (qb + 1) * block_m)
    cl = np.maximum(k0[own], a + lo[own])  # keys reachable from those rows
    cr = np.minimum(k1[own], b + hi[own])  # exclusive: (b - 1) + hi + 1
    kb_first = cl // block_n
    kb_stop = np.where(cr > cl, (cr - 1) // block_n + 1, kb_first)
    # level 2: key blocks of each pair
    own2, kb = _expand(kb_first, kb_stop)
    s = own[own2]
    qb2 = qb[own2]
    area = band_area(a[own2], b[own2], np.maximum(k0[s], kb * block_n), np.minimum(k1[s], (kb + 1) * block_n),
                     lo[s], hi[s])
    keep = area > 0
    s, qb2, kb, area = s[keep], qb2[keep], kb[keep], area[keep]
    h = head[s]

    # group triples by (head, query block, key block)
    key = (h * nqb + qb2) * nkb + kb
    order = np.argsort(key, kind="stable")
    key, s, area = key[order], s[order], area[order]
    if len(key):
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    else:
        starts = np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, len(key)])
    gkey = key[starts]
    garea = np.add.reduceat(area, starts) if len(starts) else np.zeros(0, dtype=np.int64)
    gh, rest = np.divmod(gkey, nqb * nkb)
    gq, gk = np.divmod(rest, nkb)
    rows = np.minimum(S, (gq + 1) * block_m) - gq * block_m
    cols = np.minimum(S, (gk + 1) * block_n) - gk * block_n
    gfull = garea == rows * cols

    # rules of the partial groups, stored once; both orientations point into them
    triple_partial = np.repeat(~gfull, sizes)
    rule_idx = s[triple_partial]
    psizes = sizes[~gfull]
    pr1 = np.cumsum(psizes)
    pr0 = pr1 - psizes
    g_r0 = np.zeros(len(gkey), dtype=np.int64)
    g_r1 = np.zeros(len(gkey), dtype=np.int64)
    g_r0[~gfull], g_r1[~gfull] = pr0, pr1

    def orient(row_of_group: np.ndarray, other: np.ndarray, n_rows: int, order_g: np.ndarray) -> Orientation:
        r, o, full = row_of_group[order_g], other[order_g], gfull[order_g]
        r0, r1 = g_r0[order_g], g_r1[order_g]
        return Orientation(
            full_ptr=_csr(r[full], n_rows), full_idx=_i32(o[full]),
            part_ptr=_csr(r[~full], n_rows), part_idx=_i32(o[~full]),
            part_r0=_i32(r0[~full]), part_r1=_i32(r1[~full]),
        )

    by_q = orient(gh * nqb + gq, gk, heads * nqb, np.arange(len(gkey)))  # already (h, qb, kb) order
    by_k = orient(gh * nkb + gk, gq, heads * nkb, np.lexsort((gq, gk, gh)))
    rules = np.stack([q0, q1, k0, k1, lo, hi], axis=1) if n else np.zeros((0, 6), dtype=np.int64)
    return Schedule(
        seqlen=S, heads=heads, block_m=block_m, block_n=block_n, n_qblocks=nqb, n_kblocks=nkb,
        rules=_i32(rules.reshape(-1, 6)), rule_idx=_i32(rule_idx), by_q=by_q, by_k=by_k,
        n_full=int(gfull.sum()), n_partial=int((~gfull).sum()),
    )


@functools.lru_cache(maxsize=16)
def _cached(digest: str, seqlen: int, heads: int, block_m: int, block_n: int, mask_ref) -> Schedule:
    return build_schedule(mask_ref.slices, seqlen, heads, block_m, block_n)


class _Ref:
    """Hashes as the mask's slice digest, so the cache key does not hold the mask's arrays twice."""

    def __init__(self, mask) -> None:
        self.slices = mask.slices
        self._key = (mask.slices_hash, mask.seqlen, mask.heads)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref) and other._key == self._key


def mask_schedule(mask, block_m: int, block_n: int) -> Schedule:
    """:func:`build_schedule` of a built :class:`attnbench.masks.Mask`, cached by its slice hash."""
    return _cached(mask.slices_hash, mask.seqlen, mask.heads, block_m, block_n, _Ref(mask))


def render_dense(schedule: Schedule) -> np.ndarray:
    """``[heads, S, S]`` bool of what the schedule allows (tests only: small S)."""
    S, H = schedule.seqlen, schedule.heads
    out = np.zeros((H, S, S), dtype=bool)
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    o = schedule.by_q
    for h in range(H):
        for qb in range(schedule.n_qblocks):
            r = h * schedule.n_qblocks + qb
            rs = slice(qb * schedule.block_m, min(S, (qb + 1) * schedule.block_m))
            for kb in o.full_idx[o.full_ptr[r]:o.full_ptr[r + 1]]:
                out[h, rs, kb * schedule.block_n:min(S, (kb + 1) * schedule.block_n)] = True
            for e in range(o.part_ptr[r], o.part_ptr[r + 1]):
                kb = o.part_idx[e]
                cs = slice(kb * schedule.block_n, min(S, (kb + 1) * schedule.block_n))
                for rid in schedule.rule_idx[o.part_r0[e]:o.part_r1[e]]:
                    q0, q1, k0, k1, lo, hi = schedule.rules[rid]
                    ii, jj = i[rs], j[:, cs]
                    out[h, rs, cs] |= (ii >= q0) & (ii < q1) & (jj >= k0) & (jj < k1) & (jj - ii >= lo) & (jj - ii <= hi)
    return out
