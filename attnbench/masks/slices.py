"""Slices: the one representation of every mask, and their exact area.

A slice is a half-open rectangle ``[q0, q1) x [k0, k1)`` of (query ``i``, key ``j``) pairs
plus a kind that cuts it along diagonals (see masks.md):

- ``FULL``: every pair of the rectangle.
- ``CAUSAL``: diagonal at the bottom-right corner: ``j - i <= k1 - q1``.
- ``INV_CAUSAL``: diagonal at the top-left corner: ``j - i >= k0 - q0``.
- ``BI_CAUSAL``: both.

So every slice is ``{(i, j) in rectangle : lo <= j - i <= hi}`` with ``lo``/``hi`` either a
diagonal or a sentinel (``-BIG``/``BIG``) where the kind has no such bound. That form gives a
closed-form area (no loop over rows) and is what every converter uses.

Invariants of a mask's table (checked by the tests): rectangles pairwise disjoint within a
head, inside ``[0, S) x [0, S)``, no empty slice.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

BIG = 2**62
"""Sentinel for a missing bound on ``j - i`` (never reached by any real difference)."""


class SliceKind(enum.IntEnum):
    FULL = 0
    CAUSAL = 1
    INV_CAUSAL = 2
    BI_CAUSAL = 3


_HAS_HI = np.array([False, True, False, True])  # indexed by kind
_HAS_LO = np.array([False, False, True, True])


def _i64(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.int64).reshape(-1))


@dataclass(frozen=True, eq=False)
class SliceTable:
    """Struct of arrays: one entry per slice. ``head`` is None for head-shared (static) masks."""

    q0: np.ndarray
    q1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    kind: np.ndarray
    head: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("q0", "q1", "k0", "k1"):
            object.__setattr__(self, name, _i64(getattr(self, name)))
        object.__setattr__(self, "kind", np.ascontiguousarray(np.asarray(self.kind, dtype=np.uint8).reshape(-1)))
        if self.head is not None:
            object.__setattr__(self, "head", np.ascontiguousarray(np.asarray(self.head, dtype=np.int32).reshape(-1)))
        n = len(self.q0)
        sizes = {len(self.q1), len(self.k0), len(self.k1), len(self.kind)}
        if self.head is not None:
            sizes.add(len(self.head))
        if sizes != {n}:
            raise ValueError(f"SliceTable arrays differ in length: {sorted(sizes | {n})}")
        if n and int(self.kind.max()) > 3:
            raise ValueError("SliceTable kind must be a SliceKind (0..3)")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def empty(cls, with_head: bool = False) -> "SliceTable":
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int32) if with_head else None)

    @classmethod
    def of(cls, q0, q1, k0, k1, kind, head=None) -> "SliceTable":
        """Broadcast scalars/arrays into a table (``kind`` may be one SliceKind for all)."""
        arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in (q0, q1, k0, k1, kind)))
        h = None
        if head is not None:
            h = np.broadcast_to(np.asarray(head, dtype=np.int64), arrays[0].shape)
        return cls(arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], h)

    @staticmethod
    def concat(tables: Iterable["SliceTable"]) -> "SliceTable":
        """Concatenate tables; all must agree on having a head array (or all none)."""
        tables = list(tables)
        if not tables:
            return SliceTable.empty()
        with_head = {t.head is not None for t in tables}
        if len(with_head) != 1:
            raise ValueError("cannot concat head-shared and per-head slice tables")
        heads = np.concatenate([t.head for t in tables]) if with_head.pop() else None
        return SliceTable(
            np.concatenate([t.q0 for t in tables]),
            np.concatenate([t.q1 for t in tables]),
            np.concatenate([t.k0 for t in tables]),
            np.concatenate([t.k1 for t in tables]),
            np.concatenate([t.kind for t in tables]),
            heads,
        )

    def select(self, which: np.ndarray) -> "SliceTable":
        """Sub-table by boolean mask or index array."""
        return SliceTable(
            self.q0[which], self.q1[which], self.k0[which], self.k1[which], self.kind[which],
            None if self.head is None else self.head[which],
        )

    def with_head(self, head: int | np.ndarray) -> "SliceTable":
        return SliceTable(self.q0, self.q1, self.k0, self.k1, self.kind,
                          np.broadcast_to(np.asarray(head, dtype=np.int32), self.q0.shape))

    def for_head(self, h: int) -> "SliceTable":
        """The slices of head ``h`` (all of them for a head-shared table), head dropped."""
        t = self if self.head is None else self.select(self.head == h)
        return SliceTable(t.q0, t.q1, t.k0, t.k1, t.kind, None)

    def sorted(self) -> "SliceTable":
        """Canonical order: by head, then q0, then k0."""
        keys = (self.k0, self.q0) if self.head is None else (self.k0, self.q0, self.head)
        return self.select(np.lexsort(keys))

    def nonempty(self) -> "SliceTable":
        return self.select(self.areas() > 0)

    def freeze(self) -> "SliceTable":
        for a in (self.q0, self.q1, self.k0, self.k1, self.kind, self.head):
            if a is not None:
                a.setflags(write=False)
        return self

    # -- derived -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.q0)

    @property
    def lo(self) -> np.ndarray:
        """Lower bound on ``j - i`` (``-BIG`` where the kind has none)."""
        return np.where(_HAS_LO[self.kind], self.k0 - self.q0, -BIG)

    @property
    def hi(self) -> np.ndarray:
        """Upper bound on ``j - i`` (``BIG`` where the kind has none)."""
        return np.where(_HAS_HI[self.kind], self.k1 - self.q1, BIG)

    def areas(self) -> np.ndarray:
        """Exact number of allowed pairs of every slice (int64)."""
        return band_area(self.q0, self.q1, self.k0, self.k1, self.lo, self.hi)

    def area(self) -> int:
        return int(self.areas().sum())

    def digest(self) -> str:
        """sha1 of the arrays in a fixed byte order (stable across machines)."""
        h = hashlib.sha1()
        h.update(f"slices:{len(self)}:{'head' if self.head is not None else 'shared'}".encode())
        for a in (self.q0, self.q1, self.k0, self.k1):
            h.update(a.astype("<i8").tobytes())
        h.update(self.kind.astype("u1").tobytes())
        if self.head is not None:
            h.update(self.head.astype("<i4").tobytes())
        return h.hexdigest()


# -- exact area -------------------------------------------------------------------------
def _sum_clamp(x: np.ndarray, K: np.ndarray) -> np.ndarray:
    """sum_{v=0}^{x-1} min(v, K) for x >= 0 (0 for x <= 0); vectorised."""
    x = np.maximum(x, 0)
    small = x * (x - 1) // 2
    big = K * (K + 1) // 2 + (x - K - 1) * K
    return np.where(x <= K + 1, small, big)


def _count_le(q0, q1, k0, k1, t) -> np.ndarray:
    """G(t) = #{(i, j) in [q0,q1) x [k0,k1) : j - i <= t}.

    Row i contributes clamp(i + t + 1 - k0, 0, K) with K = k1 - k0: a sum of a clamped
    arithmetic sequence, i.e. S(b + 1) - S(a) with S the prefix sum of clamp(v, 0, K).
    ``t`` is first clipped into the range where G changes, so sentinels never overflow.
    """
    t = np.clip(t, k0 - q1, k1 - 1 - q0)
    K = k1 - k0
    c = t + 1 - k0
    a = q0 + c
    b = q1 - 1 + c
    return _sum_clamp(b + 1, K) - _sum_clamp(a, K)


def band_area(q0, q1, k0, k1, lo, hi) -> np.ndarray:
    """#{(i, j) in [q0,q1) x [k0,k1) : lo <= j - i <= hi}, exact, vectorised (int64)."""
    q0, q1, k0, k1, lo, hi = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in (q0, q1, k0, k1, lo, hi)))
    ok = (q1 > q0) & (k1 > k0) & (hi >= lo)
    # Neutralise empty rectangles so the clip bounds stay ordered.
    q1s = np.where(ok, q1, q0 + 1)
    k1s = np.where(ok, k1, k0 + 1)
    lo_m1 = np.where(lo <= -BIG, lo, lo - 1)  # avoid wrapping below the sentinel
    area = _count_le(q0, q1s, k0, k1s, hi) - _count_le(q0, q1s, k0, k1s, lo_m1)
    return np.where(ok, area, 0).astype(np.int64)


# -- the generic band decomposition ----------------------------------------------------
def band(r0, r1, c0, c1, lo=-BIG, hi=BIG) -> SliceTable:
    """Slices for ``{(i, j): r0 <= i < r1, c0 <= j < c1, lo <= j - i <= hi}``.

    Vectorised over broadcast arrays of arguments (one band per element). Each band is cut
    into at most three row segments: in each, the left bound of a row is either the column
    edge ``c0`` or the diagonal ``i + lo`` and the right bound either ``c1 - 1`` or
    ``i + hi``, giving one FULL / CAUSAL / INV_CAUSAL / BI_CAUSAL slice. Rows with no allowed
    key are cut away first, so no slice is empty. Correct for any sizes (a window larger
    than the matrix included). Rectangles of one band are disjoint (distinct rows).
    """
    r0, r1, c0, c1, lo, hi = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=np.int64)) for a in (r0, r1, c0, c1, lo, hi))
    )
    lo = np.maximum(lo, -BIG)
    hi = np.minimum(hi, BIG)
    # Rows with at least one allowed key: c0 <= i + hi and i + lo <= c1 - 1.
    a = np.maximum(r0, c0 - hi)
    b = np.minimum(r1, c1 - lo)
    valid = (a < b) & (lo <= hi) & (c0 < c1)
    b = np.where(valid, b, a)
    A = np.clip(c0 - lo, a, b)  # rows >= A: left bound is the diagonal i + lo
    B = np.clip(c1 - hi, a, b)  # rows >= B: right bound is the edge c1 - 1
    m1 = np.minimum(A, B)
    m2 = np.maximum(A, B)
    mid_bi = A < B
    q0 = np.concatenate([a, m1, m2])
    q1 = np.concatenate([m1, m2, b])
    k0 = np.concatenate([c0, np.where(mid_bi, m1 + lo, c0), m2 + lo])
    k1 = np.concatenate([m1 + hi, np.where(mid_bi, m2 + hi, c1), c1])
    kind = np.concatenate([
        np.full(a.shape, SliceKind.CAUSAL, dtype=np.uint8),
        np.where(mid_bi, SliceKind.BI_CAUSAL, SliceKind.FULL).astype(np.uint8),
        np.full(a.shape, SliceKind.INV_CAUSAL, dtype=np.uint8),
    ])
    keep = q1 > q0
    # keep the three segments of each band next to each other (order: band, segment)
    n = len(a)
    order = np.arange(3 * n).reshape(3, n).T.reshape(-1)
    keep_o = keep[order]
    idx = order[keep_o]
    return SliceTable(q0[idx], q1[idx], k0[idx], k1[idx], kind[idx])
