"""block_causal_document: documents of 1..8 blocks, block-causal inside each document.

Block counts: ``Generator(PCG64(seed)).integers(1, 9)`` drawn in chunks of 1024 documents
(the same stream whatever S); document length = count * B, the last document cut to fit S.
A query in block b of its document sees its document's keys up to the end of block b.
"""

import numpy as np

from attnbench.masks.documents import CHUNK, fill_to, rng, starts_from_lengths
from attnbench.masks.families._common import SEED
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask
from attnbench.masks.slices import SliceKind, SliceTable

BLOCK = ParamSpec("block", int, 1024, "block size B in tokens", min=1)


def block_doc_starts(seqlen: int, block: int, seed: int) -> np.ndarray:
    g = rng(seed)
    lengths = fill_to(seqlen, lambda: g.integers(1, 9, size=CHUNK) * block)
    return starts_from_lengths(lengths)


@register_mask(
    "block_causal_document",
    description="doc(i) == doc(j) and j < start(doc(i)) + B * (block_of(i) + 1); documents of 1..8 blocks",
    params=[BLOCK, SEED], uses_documents=True,
)
def block_causal_document(seqlen: int, params: dict, heads: int) -> MaskParts:
    B = params["block"]
    starts = block_doc_starts(seqlen, B, params["seed"])
    s, e = starts[:-1], starts[1:]
    nblocks = -(-(e - s) // B)
    doc = np.repeat(np.arange(len(s)), nblocks)
    first = np.repeat(np.cumsum(nblocks) - nblocks, nblocks)
    b = np.arange(len(doc)) - first  # block index inside its document
    q0 = s[doc] + b * B
    q1 = np.minimum(q0 + B, e[doc])
    return MaskParts(SliceTable.of(q0, q1, s[doc], q1, SliceKind.FULL), doc_starts=starts)
