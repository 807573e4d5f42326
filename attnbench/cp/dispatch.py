"""Splitting the global sequence into per-rank shards (a permutation of token positions).

A :class:`Layout` gives every rank an equal number of tokens as sorted, disjoint global runs;
the rank's local tensors hold those tokens in ascending global order. Strategies:

- ``contiguous``: rank r holds ``[r S/W, (r+1) S/W)``.
- ``zigzag``: 2W equal chunks, rank r holds chunks r and 2W-1-r (balances causal masks).
- ``documents``: the zigzag applied inside every document (each document cut into 2W pieces,
  rank r takes pieces r and 2W-1-r). Remainder tokens (length mod 2W) go round-robin over
  the ranks with a pointer carried from document to document, which keeps the token counts
  exactly equal (the total remainder is a multiple of W when W divides S) and the area
  balanced: every rank gets the same share of every document's rows.
- ``auto``: the candidate (contiguous, zigzag, documents when the mask has documents) with
  the lowest area imbalance, computed from slices; ties go to the simpler one.

Per-rank work (:func:`rank_area`) is the mask area of the rank's query rows against all keys:
summed over a ring's steps, that is exactly what the rank computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from attnbench.cp.slices import merge_runs, query_area, runs_length
from attnbench.errors import Unsupported


@dataclass(frozen=True, eq=False)
class Layout:
    """Per-rank token runs (``runs[r]``: ``[n, 2]`` int64, sorted, disjoint, equal lengths)."""

    strategy: str
    seqlen: int
    runs: tuple[np.ndarray, ...]

    @property
    def world(self) -> int:
        return len(self.runs)

    @property
    def shard(self) -> int:
        return self.seqlen // self.world

    def positions(self, rank: int) -> np.ndarray:
        """Global positions of the rank's tokens, in local order."""
        r = self.runs[rank]
        return np.concatenate([np.arange(a, b) for a, b in r]) if len(r) else np.zeros(0, np.int64)

    def permutation(self) -> np.ndarray:
        """Global position of every token in dispatched (rank-major) order."""
        return np.concatenate([self.positions(r) for r in range(self.world)])

    def split(self, parts: int) -> "Layout":
        """Each rank's tokens (in local order) cut into ``parts`` equal pieces: rank r, piece j
        becomes rank ``r * parts + j`` (used for Ulysses groups under a ring)."""
        out = []
        for runs in self.runs:
            n = runs_length(runs)
            if n % parts:
                raise Unsupported(f"{n} tokens per group are not divisible by {parts}")
            lengths = runs[:, 1] - runs[:, 0]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for j in range(parts):
                a, b = j * n // parts, (j + 1) * n // parts
                lo = np.clip(a - offsets[:-1], 0, lengths)
                hi = np.clip(b - offsets[:-1], 0, lengths)
                piece = np.stack([runs[:, 0] + lo, runs[:, 0] + hi], axis=1)
                out.append(merge_runs(piece))
        return Layout(self.strategy, self.seqlen, tuple(out))

    def check(self) -> None:
        lengths = {runs_length(r) for r in self.runs}
        if len(lengths) != 1:
            raise AssertionError(f"unequal shards {sorted(lengths)}")
        allpos = np.sort(self.permutation())
        if not np.array_equal(allpos, np.arange(self.seqlen)):
            raise AssertionError("layout is not a permutation of the sequence")


def _need(seqlen: int, divisor: int, what: str) -> None:
    if seqlen % divisor:
        raise Unsupported(f"seqlen {seqlen} is not divisible by {divisor} ({what})")


def contiguous(seqlen: int, world: int, doc_starts=None) -> Layout:
    _need(seqlen, world, "contiguous shards")
    n = seqlen // world
    return Layout("contiguous", seqlen, tuple(np.array([[r * n, (r + 1) * n]], dtype=np.int64) for r in range(world)))


def zigzag(seqlen: int, world: int, doc_starts=None) -> Layout:
    _need(seqlen, 2 * world, "zigzag: 2 x world chunks")
    c = seqlen // (2 * world)
    return Layout("zigzag", seqlen, tuple(
        merge_runs(np.array([[r * c, (r + 1) * c], [(2 * world - 1 - r) * c, (2 * world - r) * c]]))
        for r in range(world)
    ))


def documents(seqlen: int, world: int, doc_starts=None) -> Layout:
    """Every document at once (arrays over the documents: a 1M-token sequence of short
    documents has tens of thousands; a per-document loop cost seconds per layout there)."""
    if doc_starts is None:
        raise Unsupported("the 'documents' dispatch needs a mask with documents")
    _need(seqlen, world, "equal shards")
    n = 2 * world
    bounds = np.asarray(doc_starts, dtype=np.int64)
    base, rem = np.divmod(np.diff(bounds), n)
    # the round-robin pointer at each document's start; its remainder tokens k = 0..rem-1 go
    # to rank (ptr + k) % world: rank r gets those k = offset, offset + world, ... below rem
    ptr = np.concatenate([[0], np.cumsum(rem)[:-1]]) % world
    offset = (np.arange(world)[None, :] - ptr[:, None]) % world
    extra = np.where(offset < rem[:, None], (rem[:, None] - 1 - offset) // world + 1, 0)  # 0, 1 or 2
    sizes = np.repeat(base[:, None], n, axis=1)
    sizes[:, world:] += (extra >= 1)[:, ::-1]  # first extra token: the rank's back piece
    sizes[:, :world] += extra >= 2  # second: its front piece
    edges = bounds[:-1, None] + np.concatenate([np.zeros((len(base), 1), dtype=np.int64), np.cumsum(sizes, axis=1)], axis=1)
    runs = []
    for r in range(world):  # rank r: piece r (front) and piece 2W-1-r (back) of every document
        front = np.stack([edges[:, r], edges[:, r + 1]], axis=1)
        back = np.stack([edges[:, n - 1 - r], edges[:, n - r]], axis=1)
        runs.append(merge_runs(np.stack([front, back], axis=1).reshape(-1, 2)))
    return Layout("documents", seqlen, tuple(runs))


STRATEGIES: dict[str, Callable[..., Layout]] = {
    "contiguous": contiguous,
    "zigzag": zigzag,
    "documents": documents,
}


def rank_area(mask, layout: Layout) -> list[int]:
    """Allowed (query, key) pairs of every rank's query rows against all keys (per head)."""
    return [query_area(mask.slices, runs) for runs in layout.runs]


def imbalance(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean() if len(v) else 0.0
    return float(v.max() / mean) if mean > 0 else 1.0


def make_layout(mask, world: int, strategy: str = "auto") -> Layout:
    """The layout of ``strategy`` for ``mask`` over ``world`` ranks (see the module docstring)."""
    if strategy != "auto":
        try:
            build = STRATEGIES[strategy]
        except KeyError:
            raise Unsupported(f"unknown dispatch {strategy!r} (known: auto, {', '.join(STRATEGIES)})") from None
        return build(mask.seqlen, world, mask.doc_starts)
    best, best_score = None, None
    errors = []
    for name, build in STRATEGIES.items():
        try:
            layout = build(mask.seqlen, world, mask.doc_starts)
        except Unsupported as exc:
            errors.append(str(exc))
            continue
        score = imbalance(rank_area(mask, layout))
        if best_score is None or score < best_score - 1e-9:
            best, best_score = layout, score
    if best is None:
        raise Unsupported("; ".join(errors))
    return best
