"""block_sparse: B x B blocks; per head and query block, the top-k key blocks by a seeded score.

k = ceil(density * n_kv_blocks) (at least 1). Scores: ``Generator(PCG64(seed)).random()``
doubles in (head, query block, key block) order; the last block of each axis is cut to fit S.
Adjacent selected key blocks of a query block are merged into one slice.
"""

import numpy as np

from attnbench.masks.documents import rng
from attnbench.masks.families._blocks import select_blocks, selection_to_slices, topk_count
from attnbench.masks.families._common import SEED
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask

BLOCK = ParamSpec("block", int, 128, "block size B (64 or 128 usual)", min=1)
DENSITY = ParamSpec("density", float, 0.5, "fraction of key blocks kept per query block, in (0, 1]",
                    min=0.0, min_exclusive=True, max=1.0)


@register_mask(
    "block_sparse",
    description="B x B blocks; per head and query block keep the top ceil(density * n_kv_blocks) by seeded score",
    params=[BLOCK, DENSITY, SEED], dynamic=True,
)
def block_sparse(seqlen: int, params: dict, heads: int) -> MaskParts:
    B = params["block"]
    n = -(-seqlen // B)
    bounds = np.minimum(np.arange(n + 1, dtype=np.int64) * B, seqlen)
    sel = select_blocks(rng(params["seed"]), heads, n, n, topk_count(params["density"], n))
    return MaskParts(selection_to_slices(sel, bounds, bounds))
