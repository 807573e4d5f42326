"""Top-k block selection shared by the two dynamic (block-sparse) families."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from attnbench.errors import MaskTooLarge
from attnbench.masks.slices import SliceKind, SliceTable

_ROWS_ELEMENTS = 1 << 22  # scores drawn per call: bounded memory, same stream as one big draw
#: the most (head, query block, key block) pairs a block-sparse mask is built with: 1M tokens
#: in blocks of 128 for 4 heads; beyond it the selection and its slices would not fit (and
#: drawing them would take hours), so it is refused with a reason instead
MAX_BLOCK_PAIRS = 1 << 28


def topk_count(density: float, n_kv_blocks: int) -> int:
    """ceil(density * n) (at least 1), with density read as the decimal it was written as
    (so 0.3 * 10 is 3, not 4 from binary rounding)."""
    k = math.ceil(Fraction(density).limit_denominator(10**9) * n_kv_blocks)
    return max(1, min(k, n_kv_blocks))


def select_blocks(g: np.random.Generator, heads: int, nq: int, nk: int, k: int) -> np.ndarray:
    """bool [heads, nq, nk]: for each head and query block the k key blocks of highest score.

    Scores are ``g.random()`` doubles in head, query-block, key-block order (drawn in row
    chunks; numpy's stream is the same as one ``g.random((heads, nq, nk))`` call).
    """
    pairs = heads * nq * nk
    if pairs > MAX_BLOCK_PAIRS:
        raise MaskTooLarge(
            f"{heads} heads x {nq} query blocks x {nk} key blocks = {pairs} block pairs, more than the "
            f"{MAX_BLOCK_PAIRS} a block-sparse mask is built with; use larger blocks, fewer heads or a shorter sequence"
        )
    sel = np.zeros((heads, nq, nk), dtype=bool)
    rows = max(1, _ROWS_ELEMENTS // nk)
    for h in range(heads):
        for r0 in range(0, nq, rows):
            r1 = min(nq, r0 + rows)
            scores = g.random((r1 - r0, nk))
            if k == nk:
                sel[h, r0:r1] = True
                continue
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            np.put_along_axis(sel[h, r0:r1], top, True, axis=1)
    return sel


def selection_to_slices(sel: np.ndarray, q_bounds: np.ndarray, k_bounds: np.ndarray) -> SliceTable:
    """One FULL slice per run of adjacent selected key blocks of a (head, query block)."""
    d = np.diff(sel.view(np.int8), axis=-1, prepend=np.int8(0), append=np.int8(0))
    h, q, ks = np.nonzero(d == 1)
    ke = np.nonzero(d == -1)[2]  # same row-major order: runs alternate start, end
    return SliceTable.of(q_bounds[q], q_bounds[q + 1], k_bounds[ks], k_bounds[ke], SliceKind.FULL, head=h)
