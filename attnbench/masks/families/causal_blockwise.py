"""causal_blockwise: causal within each document; the last document sees every earlier key."""

from attnbench.masks.families._common import DISTRIBUTION, LENGTHS_AT, SEED, documents
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


@register_mask(
    "causal_blockwise",
    description="doc(i) == doc(j) and j <= i; queries of the last document see every j <= i",
    params=[DISTRIBUTION, SEED, LENGTHS_AT], uses_documents=True,
)
def causal_blockwise(seqlen: int, params: dict, heads: int) -> MaskParts:
    starts, drawn = documents(seqlen, params)
    s, e = starts[:-1], starts[1:]
    last = int(s[-1])
    causal = SliceTable.of(s, e, s, e, SliceKind.CAUSAL)
    history = SliceTable.of(last, seqlen, 0, last, SliceKind.FULL)  # empty (dropped) with one document
    return MaskParts(SliceTable.concat([causal, history]), doc_starts=starts, drawn=drawn)
