"""share_question: D_0 is a shared question; every later document sees it plus itself causally."""

from attnbench.masks.families._common import DISTRIBUTION, LENGTHS_AT, SEED, documents
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


@register_mask(
    "share_question",
    description="D_0 is the question (causal); i in D_d, d >= 1: j in D_0, or doc(j) == d and j <= i",
    params=[DISTRIBUTION, SEED, LENGTHS_AT], uses_documents=True,
)
def share_question(seqlen: int, params: dict, heads: int) -> MaskParts:
    starts, drawn = documents(seqlen, params)
    s, e = starts[:-1], starts[1:]
    q_end = int(e[0])
    causal = SliceTable.of(s, e, s, e, SliceKind.CAUSAL)  # D_0 and every answer, causal
    # every later document sees the whole question: one rectangle below D_0
    question = SliceTable.of(q_end, seqlen, 0, q_end, SliceKind.FULL)
    return MaskParts(SliceTable.concat([causal, question]), doc_starts=starts, drawn=drawn)
