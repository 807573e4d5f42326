"""The generic machinery that lets every static mask run context-parallel.

A rank holds a set of query positions and, at each step, a chunk of key positions; both are
unions of global ranges ("runs", sorted, disjoint), laid out one after the other in the
rank's local tensors. The work of the step is the intersection of the global mask slices
with (queries x keys), re-expressed in local coordinates: each clipped slice keeps its
diagonal bounds on ``j - i`` shifted by the runs' offsets and is cut again into proper
slices by :func:`attnbench.masks.slices.band`. Everything is vectorised over (slice, run)
pairs, so the cost is proportional to the output, never to S^2.

:class:`LocalMask` is one step's rectangle ``q_len x k_len`` and its slices; it renders
itself as a dense boolean mask or a FlexAttention BlockMask on demand (cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from attnbench.masks.slices import BIG, SliceTable, band, band_area


def as_runs(runs) -> np.ndarray:
    """``[n, 2]`` int64 array of ``[start, stop)`` runs (empty runs dropped)."""
    r = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    return r[r[:, 1] > r[:, 0]]


def merge_runs(runs: np.ndarray) -> np.ndarray:
    """Sorted, disjoint runs with touching neighbours joined."""
    r = as_runs(runs)
    if len(r) == 0:
        return r
    r = r[np.argsort(r[:, 0], kind="stable")]
    starts = np.ones(len(r), dtype=bool)
    starts[1:] = r[1:, 0] > r[:-1, 1]
    group = np.cumsum(starts) - 1
    out = np.empty((int(group[-1]) + 1, 2), dtype=np.int64)
    out[:, 0] = r[starts, 0]
    out[:, 1] = np.maximum.reduceat(r[:, 1], np.nonzero(starts)[0])
    return out


def runs_length(runs: np.ndarray) -> int:
    return int((runs[:, 1] - runs[:, 0]).sum())


def _repeat_ranges(start: np.ndarray, stop: np.ndarray):
    counts = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, start[owner] + (np.arange(len(owner)) - first)


def _query_pairs(table: SliceTable, q_runs: np.ndarray):
    """(slice index, query run index, rows [a, b)) of every non-empty slice x run overlap."""
    qs, qe = q_runs[:, 0], q_runs[:, 1]
    first = np.searchsorted(qe, table.q0, side="right")
    last = np.searchsorted(qs, table.q1, side="left")
    own, qr = _repeat_ranges(first, np.maximum(last, first))
    a = np.maximum(table.q0[own], qs[qr])
    b = np.minimum(table.q1[own], qe[qr])
    keep = a < b
    return own[keep], qr[keep], a[keep], b[keep]


def query_area(table: SliceTable, q_runs) -> int:
    """Allowed pairs of the rows in ``q_runs`` (all keys): the work of a rank that owns them."""
    q_runs = as_runs(q_runs)
    if len(q_runs) == 0 or len(table) == 0:
        return 0
    own, _, a, b = _query_pairs(table, q_runs)
    return int(band_area(a, b, table.k0[own], table.k1[own], table.lo[own], table.hi[own]).sum())


def _key_pairs(table: SliceTable, q_runs: np.ndarray, k_runs: np.ndarray):
    """Every (slice ∩ query run) piece against every key run it can reach.

    Returns ``(own, qr, a, b, piece, kr)``: the pieces (slice index, query run index, rows
    ``[a, b)``) and, per (piece, key run) pair, the piece's index and the key run's index."""
    ks, ke = k_runs[:, 0], k_runs[:, 1]
    own, qr, a, b = _query_pairs(table, q_runs)
    lo, hi = table.lo[own], table.hi[own]
    # keys reachable from rows [a, b): [max(k0, a + lo), min(k1, b + hi))
    cl = np.maximum(table.k0[own], np.maximum(a + np.maximum(lo, -BIG // 2), 0))
    cr = np.minimum(table.k1[own], b + np.minimum(hi, BIG // 2))
    f2 = np.searchsorted(ke, cl, side="right")
    l2 = np.searchsorted(ks, cr, side="left")
    piece, kr = _repeat_ranges(f2, np.maximum(l2, f2))
    return own, qr, a, b, piece, kr


def local_slices(table: SliceTable, q_runs, k_runs) -> SliceTable:
    """``table`` ∩ (q_runs x k_runs) in local coordinates (runs sorted ascending, disjoint).

    Local row of global query ``i`` in run ``r``: ``offset(r) + i - start(r)`` where
    ``offset`` is the length of the runs before ``r`` (keys likewise).
    """
    q_runs, k_runs = as_runs(q_runs), as_runs(k_runs)
    if len(q_runs) == 0 or len(k_runs) == 0 or len(table) == 0:
        return SliceTable.empty()
    ks, ke = k_runs[:, 0], k_runs[:, 1]
    q_off = np.cumsum(q_runs[:, 1] - q_runs[:, 0]) - (q_runs[:, 1] - q_runs[:, 0])
    k_off = np.cumsum(ke - ks) - (ke - ks)
    own, qr, a, b, own2, kr = _key_pairs(table, q_runs, k_runs)
    lo, hi = table.lo[own], table.hi[own]
    o = own[own2]
    q_shift = q_off[qr[own2]] - q_runs[qr[own2], 0]
    k_shift = k_off[kr] - ks[kr]
    d = k_shift - q_shift  # local (j - i) = global (j - i) + d
    lo2, hi2 = lo[own2], hi[own2]
    lo2 = np.where(lo2 <= -BIG, -BIG, lo2 + d)
    hi2 = np.where(hi2 >= BIG, BIG, hi2 + d)
    return band(
        a[own2] + q_shift, b[own2] + q_shift,
        np.maximum(table.k0[o], ks[kr]) + k_shift, np.minimum(table.k1[o], ke[kr]) + k_shift,
        lo2, hi2,
    )


def area_by_owner(table: SliceTable, q_runs, k_runs, owner, owners: int) -> np.ndarray:
    """Allowed pairs of the rows ``q_runs`` against the keys of each owner: ``k_runs`` (sorted,
    disjoint) are labelled ``owner[i]`` in ``0..owners-1``; returns ``[owners]`` int64.
    The same pairing as :func:`local_slices`, counted in closed form (no slices built)."""
    q_runs, k_runs = as_runs(q_runs), np.asarray(k_runs, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(owners, dtype=np.int64)
    if len(q_runs) == 0 or len(k_runs) == 0 or len(table) == 0:
        return out
    own, _, a, b, piece, kr = _key_pairs(table, q_runs, k_runs)
    o = own[piece]
    area = band_area(a[piece], b[piece], np.maximum(table.k0[o], k_runs[kr, 0]),
                     np.minimum(table.k1[o], k_runs[kr, 1]), table.lo[o], table.hi[o])
    np.add.at(out, np.asarray(owner, dtype=np.int64)[kr], area)
    return out


def pair_areas(table: SliceTable, runs) -> np.ndarray:
    """``[n, n]`` int64: allowed pairs of the rows of ``runs[g]`` against the keys of
    ``runs[h]`` (a layout's per-position runs, together a partition of the sequence): the
    work of every (query position, key position) step of a ring over that layout."""
    n = len(runs)
    allruns = np.concatenate([as_runs(r) for r in runs]) if n else np.zeros((0, 2), np.int64)
    owner = np.concatenate([np.full(len(as_runs(r)), g, dtype=np.int64) for g, r in enumerate(runs)]) if n else allruns[:, 0]
    order = np.argsort(allruns[:, 0], kind="stable")
    allruns, owner = allruns[order], owner[order]
    return np.stack([area_by_owner(table, runs[g], allruns, owner, n) for g in range(n)]) if n else np.zeros((0, 0), np.int64)


def render_dense(slices: SliceTable, q_len: int, k_len: int, device: Any = "cpu") -> torch.Tensor:
    """``[q_len, k_len]`` bool: the allowed pairs of head-shared local slices."""
    diff = torch.zeros(q_len * (k_len + 1), dtype=torch.int8)
    if len(slices):
        rows = slices.q1 - slices.q0
        own = np.repeat(np.arange(len(slices)), rows)
        first = np.repeat(np.cumsum(rows) - rows, rows)
        i = slices.q0[own] + (np.arange(len(own)) - first)
        lo, hi = slices.lo[own], slices.hi[own]
        L = np.maximum(slices.k0[own], i + np.maximum(lo, -(1 << 40)))
        R = np.minimum(slices.k1[own], i + np.minimum(hi, 1 << 40) + 1)
        keep = L < R
        base = i[keep] * (k_len + 1)
        idx = torch.from_numpy(np.concatenate([base + L[keep], base + R[keep]]))
        n = int(keep.sum())
        val = torch.cat([torch.ones(n, dtype=torch.int8), -torch.ones(n, dtype=torch.int8)])
        diff.index_add_(0, idx, val)
    dense = torch.cumsum(diff.view(q_len, k_len + 1), dim=-1, dtype=torch.int8)[:, :k_len] > 0
    return dense.to(device)


@dataclass(eq=False)
class LocalMask:
    """One local step: ``q_len`` local queries x ``k_len`` local keys and the allowed slices."""

    slices: SliceTable
    q_len: int
    k_len: int
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return len(self.slices) == 0

    @property
    def area(self) -> int:
        return self.slices.area()

    def dense(self, device: Any = "cpu") -> torch.Tensor:
        key = ("dense", str(device))
        if key not in self._cache:
            self._cache[key] = render_dense(self.slices, self.q_len, self.k_len, device)
        return self._cache[key]

    def block_mask(self, device: Any, block_size: int = 128):
        """A FlexAttention BlockMask of the rectangle (exact block counts, never densified)."""
        key = ("block", str(device), block_size)
        if key not in self._cache:
            from torch.nn.attention.flex_attention import BlockMask

            from attnbench.masks.convert import _block_kinds, _kv_layout, mask_mod

            # The converters take a square Mask; a square of side max(q_len, k_len) holding
            # the same slices has the same blocks in the q_len x k_len corner (edge blocks
            # there may be classified partial instead of full: slower, never wrong).
            side = max(self.q_len, self.k_len)
            square = SimpleNamespace(name="cp_local", seqlen=side, heads=1, slices=self.slices)
            full, partial = _block_kinds(square, block_size, block_size)
            nqb, nkb = -(-self.q_len // block_size), -(-self.k_len // block_size)
            full, partial = full[:, :nqb, :nkb], partial[:, :nqb, :nkb]
            kv_num, kv_idx = _kv_layout(partial, device)
            full_num, full_idx = _kv_layout(full, device)
            self._cache[key] = BlockMask.from_kv_blocks(
                kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(block_size, block_size),
                mask_mod=mask_mod(square, device=device), seq_lengths=(self.q_len, self.k_len),
            )
        return self._cache[key]


def local_mask(table: SliceTable, q_runs, k_runs) -> LocalMask:
    q_runs, k_runs = as_runs(q_runs), as_runs(k_runs)
    return LocalMask(local_slices(table, q_runs, k_runs).nonempty(), runs_length(q_runs), runs_length(k_runs))
