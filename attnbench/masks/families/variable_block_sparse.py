"""variable_block_sparse: block sizes vary around an average; top-k key blocks per head and query block.

Block sizes (the same for every head): uniform integers in ``[128, 2 * avg_block - 128]``
(mean ``avg_block``, minimum 128), or exactly ``avg_block`` when that range is empty
(``avg_block < 128``); drawn in chunks of 1024 until they cover S, the last block cut to fit.
Query sizes come from ``derived_rng(seed, 1)``, key sizes from ``derived_rng(seed, 2)`` (two
independent partitions). Then, as in block_sparse, scores ``Generator(PCG64(seed)).random()``
in (head, query block, key block) order, and per head and query block the top
``ceil(density * n_kv_blocks)`` (at least 1) key blocks are kept; adjacent ones are merged.
"""

import numpy as np

from attnbench.masks.documents import CHUNK, derived_rng, fill_to, rng, starts_from_lengths
from attnbench.masks.families._blocks import select_blocks, selection_to_slices, topk_count
from attnbench.masks.families._common import SEED
from attnbench.masks.families.block_sparse import DENSITY
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask

MIN_BLOCK = 128
AVG_BLOCK = ParamSpec("avg_block", int, 512, "average block size (sizes in [128, 2 * avg - 128])", min=1)


def block_bounds(seqlen: int, avg_block: int, seed: int, stream: int) -> np.ndarray:
    """Block boundaries ``[0, ..., S]`` of one axis (stream 1: queries, 2: keys)."""
    lo, hi = MIN_BLOCK, 2 * avg_block - MIN_BLOCK
    if hi < lo:
        lengths = fill_to(seqlen, lambda: np.full(CHUNK, avg_block, dtype=np.int64))
    else:
        g = derived_rng(seed, stream)
        lengths = fill_to(seqlen, lambda: g.integers(lo, hi + 1, size=CHUNK))
    return starts_from_lengths(lengths)


@register_mask(
    "variable_block_sparse",
    description="block sizes drawn around avg_block (min 128); per head and query block keep the top-k key blocks",
    params=[AVG_BLOCK, DENSITY, SEED], dynamic=True,
)
def variable_block_sparse(seqlen: int, params: dict, heads: int) -> MaskParts:
    qb = block_bounds(seqlen, params["avg_block"], params["seed"], 1)
    kb = block_bounds(seqlen, params["avg_block"], params["seed"], 2)
    nq, nk = len(qb) - 1, len(kb) - 1
    sel = select_blocks(rng(params["seed"]), heads, nq, nk, topk_count(params["density"], nk))
    return MaskParts(selection_to_slices(sel, qb, kb))
