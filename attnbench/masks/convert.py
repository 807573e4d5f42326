"""Converters from a Mask's slices to what kernels and references consume.

Every converter works from the slices only and renders the same allowed set:

- :func:`dense` ``[heads, S, S]`` bool, small S only (:class:`MaskTooLarge` above a limit);
- :func:`dense_rows` ``[heads, q1 - q0, S]`` bool rows of any S (chunked references);
- :func:`block_counts` exact allowed pairs per block, from the closed-form area;
- :func:`mask_mod` a FlexAttention ``mask_mod`` over a segment grid;
- :func:`to_block_mask` a FlexAttention ``BlockMask`` (never densified);
- :class:`VarlenForm` / :func:`render_varlen` the flash-attn varlen form of the masks that
  have one (attached by their family as ``Mask.varlen``).

Static masks have ``heads == 1``: their outputs have a head axis of 1 that broadcasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from attnbench.errors import MaskTooLarge
from attnbench.masks.slices import SliceTable, band_area

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from attnbench.masks.mask import Mask

DENSE_LIMIT = 1 << 26
_BATCH = 1 << 22  # elements of temporaries per vectorised batch


# -- varlen --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VarlenForm:
    """flash-attn varlen form: documents ``cu_seqlens`` (int64, ``[0, ..., S]``), ``causal``,
    and a window ``(window_left, window_right)`` with -1 = unbounded (flash_attn convention;
    ``causal`` implies ``window_right == 0``)."""

    cu_seqlens: np.ndarray
    causal: bool
    window_left: int = -1
    window_right: int = -1

    def __post_init__(self) -> None:
        cu = np.ascontiguousarray(self.cu_seqlens, dtype=np.int64)
        cu.setflags(write=False)
        object.__setattr__(self, "cu_seqlens", cu)
        if self.causal and self.window_right == -1:
            object.__setattr__(self, "window_right", 0)

    @classmethod
    def single(cls, seqlen: int, *, causal: bool, window_left: int = -1, window_right: int = -1) -> "VarlenForm":
        return cls(np.array([0, seqlen], dtype=np.int64), causal, window_left, window_right)

    @property
    def max_seqlen(self) -> int:
        return int(np.diff(self.cu_seqlens).max())

    @property
    def window_size(self) -> tuple[int, int]:
        return (self.window_left, self.window_right)


def render_varlen(form: VarlenForm, seqlen: int) -> torch.Tensor:
    """``[S, S]`` bool: what flash-attn's varlen call with this form allows (independent of slices)."""
    pos = torch.arange(seqlen)
    cu = torch.from_numpy(np.array(form.cu_seqlens, dtype=np.int64))
    doc = torch.searchsorted(cu, pos, right=True) - 1
    out = doc[:, None] == doc[None, :]
    d = pos[None, :] - pos[:, None]  # j - i
    if form.causal:
        out &= d <= 0
    if form.window_left >= 0:
        out &= -d <= form.window_left
    if form.window_right >= 0:
        out &= d <= form.window_right
    return out


# -- dense ---------------------------------------------------------------------------
def _row_intervals(slices: SliceTable, r0: int, r1: int):
    """Per (slice, row in [r0, r1)) the allowed key interval ``[L, R)``: arrays head, row, L, R."""
    hit = np.nonzero((slices.q0 < r1) & (slices.q1 > r0))[0]
    t = slices.select(hit)
    a = np.maximum(t.q0, r0)
    b = np.minimum(t.q1, r1)
    counts = b - a
    idx = np.repeat(np.arange(len(t)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    i = a[idx] + (np.arange(len(idx)) - first)
    lo, hi = t.lo[idx], t.hi[idx]
    L = np.maximum(t.k0[idx], i + lo)
    R = np.minimum(t.k1[idx], i + np.minimum(hi, 1 << 40) + 1)
    keep = L < R
    head = np.zeros(len(idx), dtype=np.int64) if t.head is None else t.head[idx].astype(np.int64)
    return head[keep], (i - r0)[keep], L[keep], R[keep]


def dense_rows(mask: "Mask", q0: int, q1: int, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows ``[q0, q1)`` of the mask: ``[heads, q1 - q0, S]`` bool, for any S.

    Only slices meeting the rows are touched; each contributes one key interval per row,
    painted with a +1/-1 difference array and a cumulative sum (intervals are disjoint).
    """
    S = mask.seqlen
    q0, q1 = max(0, int(q0)), min(S, int(q1))
    rows = max(0, q1 - q0)
    H = mask.heads
    diff = torch.zeros((H, rows, S + 1), dtype=torch.int8, device=device)
    if rows:
        h, r, L, R = _row_intervals(mask.slices, q0, q1)
        base = (h * rows + r) * (S + 1)
        idx = torch.from_numpy(np.concatenate([base + L, base + R])).to(device)
        val = torch.cat([torch.ones(len(L), dtype=torch.int8), -torch.ones(len(R), dtype=torch.int8)]).to(device)
        diff.view(-1).index_add_(0, idx, val)
    return torch.cumsum(diff, dim=-1, dtype=torch.int8)[..., :S] > 0


def dense(mask: "Mask", *, max_elements: int = DENSE_LIMIT) -> torch.Tensor:
    """The whole mask, ``[heads, S, S]`` bool; refuses (MaskTooLarge) above ``max_elements``."""
    n = mask.heads * mask.seqlen * mask.seqlen
    if n > max_elements:
        raise MaskTooLarge(
            f"a dense {mask.name} mask of {mask.heads} x {mask.seqlen} x {mask.seqlen} = {n:,} elements "
            f"exceeds the limit of {max_elements:,}; use dense_rows or block_counts instead"
        )
    return dense_rows(mask, 0, mask.seqlen)


# -- block counts --------------------------------------------------------------------
def _repeat_ranges(start: np.ndarray, stop: np.ndarray):
    """For ranges ``[start, stop)``: (owner index, value) of every element, vectorised."""
    counts = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, start[owner] + (np.arange(len(owner)) - first)


def _batches(sizes: np.ndarray, limit: int = _BATCH):
    """Split indices into consecutive groups whose sizes sum to about ``limit``."""
    if len(sizes) == 0:
        return
    ends = np.cumsum(sizes)
    start = 0
    while start < len(sizes):
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + limit, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def block_counts(mask: "Mask", block_q: int, block_k: int) -> np.ndarray:
    """``[heads, nqb, nkb]`` int64: exact allowed pairs per block (edge blocks cut to S).

    For every slice and query block it meets, only the key blocks the diagonal band can reach
    are visited; each block's count is the closed-form area of slice ∩ block. Never densifies.
    """
    S, H = mask.seqlen, mask.heads
    if block_q < 1 or block_k < 1:
        raise ValueError("block sizes must be >= 1")
    nqb, nkb = -(-S // block_q), -(-S // block_k)
    out = np.zeros(H * nqb * nkb, dtype=np.int64)
    t = mask.slices
    lo_all, hi_all = t.lo, t.hi
    head_all = np.zeros(len(t), dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    qb_first = t.q0 // block_q
    qb_stop = (t.q1 - 1) // block_q + 1
    for s0, s1 in _batches(qb_stop - qb_first):
        # level 1: (slice, query block) pairs, rows [a, b) of the slice inside the block
        own, qb = _repeat_ranges(qb_first[s0:s1], qb_stop[s0:s1])
        own += s0
        a = np.maximum(t.q0[own], qb * block_q)
        b = np.minimum(t.q1[own], (qb + 1) * block_q)
        lo, hi = lo_all[own], hi_all[own]
        cl = np.maximum(t.k0[own], a + lo)  # keys reachable from those rows
        cr = np.minimum(t.k1[own], b - 1 + np.minimum(hi, 1 << 40) + 1)
        kb_first = cl // block_k
        kb_stop = np.where(cr > cl, (cr - 1) // block_k + 1, kb_first)
        for p0, p1 in _batches(kb_stop - kb_first):
            # level 2: key blocks of each pair
            own2, kb = _repeat_ranges(kb_first[p0:p1], kb_stop[p0:p1])
            own2 += p0
            o = own[own2]
            area = band_area(
                a[own2], b[own2],
                np.maximum(t.k0[o], kb * block_k), np.minimum(t.k1[o], (kb + 1) * block_k),
                lo[own2], hi[own2],
            )
            flat = (head_all[o] * nqb + qb[own2]) * nkb + kb
            np.add.at(out, flat, area)
    return out.reshape(H, nqb, nkb)


# -- FlexAttention ---------------------------------------------------------------------
def segment_grid(mask: "Mask"):
    """Segment grid of the slices: ``(q_bounds, k_bounds, q_seg, k_seg, cell_lo, cell_hi)``.

    q segments split [0, S) at every slice q boundary (k likewise). ``q_seg``/``k_seg`` have
    S + 1 entries; position S (any padding index is clamped to it) maps to an extra empty
    segment. ``cell_lo``/``cell_hi`` ``[H', nqs + 1, nks + 1]`` bound ``kv - q`` in each cell
    (empty: lo > hi); ``H' = heads`` for dynamic masks, 1 for static ones.
    """
    S = mask.seqlen
    t = mask.slices
    qb = np.unique(np.concatenate([[0, S], t.q0, t.q1]))
    kb = np.unique(np.concatenate([[0, S], t.k0, t.k1]))
    nqs, nks = len(qb) - 1, len(kb) - 1
    pos = np.arange(S + 1)
    q_seg = np.searchsorted(qb, pos, side="right") - 1  # position S -> nqs (the empty segment)
    k_seg = np.searchsorted(kb, pos, side="right") - 1
    hp = mask.heads if t.head is not None else 1
    big = S + 1
    cell_lo = np.full(hp * (nqs + 1) * (nks + 1), big, dtype=np.int64)
    cell_hi = np.full(hp * (nqs + 1) * (nks + 1), -big, dtype=np.int64)
    qa, qz = np.searchsorted(qb, t.q0), np.searchsorted(qb, t.q1)
    ka, kz = np.searchsorted(kb, t.k0), np.searchsorted(kb, t.k1)
    head = np.zeros(len(t), dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    lo, hi = np.clip(t.lo, -big, big), np.clip(t.hi, -big, big)
    own, qs = _repeat_ranges(qa, qz)  # (slice, q segment)
    own2, ks = _repeat_ranges(ka[own], kz[own])  # (slice, q segment, k segment)
    o = own[own2]
    flat = (head[o] * (nqs + 1) + qs[own2]) * (nks + 1) + ks
    cell_lo[flat] = lo[o]
    cell_hi[flat] = hi[o]
    shape = (hp, nqs + 1, nks + 1)
    return qb, kb, q_seg, k_seg, cell_lo.reshape(shape), cell_hi.reshape(shape)


def mask_mod(mask: "Mask", device: str | torch.device = "cpu") -> Callable:
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` equal to the mask.

    Pure indexing and comparisons (traceable by torch.compile and vmap). Static masks ignore
    ``h``; dynamic masks index their per-head cells with it.
    """
    S = mask.seqlen
    _, _, q_seg, k_seg, cell_lo, cell_hi = segment_grid(mask)
    dtype = torch.int32 if S < 2**30 else torch.int64
    q_seg_t = torch.as_tensor(q_seg, dtype=dtype, device=device)
    k_seg_t = torch.as_tensor(k_seg, dtype=dtype, device=device)
    lo_t = torch.as_tensor(cell_lo, dtype=dtype, device=device)
    hi_t = torch.as_tensor(cell_hi, dtype=dtype, device=device)

    if mask.slices.head is None:
        lo2, hi2 = lo_t[0], hi_t[0]

        def static_mod(b, h, q_idx, kv_idx):
            qs = q_seg_t[torch.clamp(q_idx, 0, S)]
            ks = k_seg_t[torch.clamp(kv_idx, 0, S)]
            d = kv_idx - q_idx
            return (d >= lo2[qs, ks]) & (d <= hi2[qs, ks])

        static_mod.__name__ = f"mask_mod_{mask.name}"
        return static_mod

    def head_mod(b, h, q_idx, kv_idx):
        qs = q_seg_t[torch.clamp(q_idx, 0, S)]
        ks = k_seg_t[torch.clamp(kv_idx, 0, S)]
        d = kv_idx - q_idx
        return (d >= lo_t[h, qs, ks]) & (d <= hi_t[h, qs, ks])

    head_mod.__name__ = f"mask_mod_{mask.name}"
    return head_mod


def _block_kinds(mask: "Mask", block_q: int, block_k: int):
    counts = block_counts(mask, block_q, block_k)
    S = mask.seqlen
    rq = np.diff(np.minimum(np.arange(counts.shape[1] + 1) * block_q, S))
    ck = np.diff(np.minimum(np.arange(counts.shape[2] + 1) * block_k, S))
    full = counts == (rq[:, None] * ck[None, :])[None]
    partial = (counts > 0) & ~full
    return full, partial


def _kv_layout(sel: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    num = sel.sum(axis=-1).astype(np.int32)
    idx = np.argsort(~sel, axis=-1, kind="stable").astype(np.int32)  # selected blocks first, in order
    return (torch.from_numpy(num[None]).to(device), torch.from_numpy(np.ascontiguousarray(idx[None])).to(device))


def to_block_mask(mask: "Mask", block_size: int | tuple[int, int] = 128, device: str | torch.device = "cpu") -> "BlockMask":
    """A FlexAttention BlockMask built from exact block counts (never from a dense mask).

    Blocks whose every pair is allowed go to ``full_kv_*`` (mask_mod skipped), blocks with
    some allowed pairs to ``kv_*`` (mask_mod applied). Shapes ``[1, H, nqb]`` and
    ``[1, H, nqb, nkb]``, ``H = mask.heads``.
    """
    from torch.nn.attention.flex_attention import BlockMask

    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size
    full, partial = _block_kinds(mask, bq, bk)
    kv_num, kv_idx = _kv_layout(partial, device)
    full_num, full_idx = _kv_layout(full, device)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=(bq, bk), mask_mod=mask_mod(mask, device=device), seq_lengths=(mask.seqlen, mask.seqlen),
    )
