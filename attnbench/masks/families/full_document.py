"""full_document: doc(i) == doc(j)."""

from attnbench.masks.convert import VarlenForm
from attnbench.masks.families._common import DISTRIBUTION, LENGTHS_AT, SEED, documents
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


@register_mask("full_document", description="doc(i) == doc(j)", params=[DISTRIBUTION, SEED, LENGTHS_AT], uses_documents=True)
def full_document(seqlen: int, params: dict, heads: int) -> MaskParts:
    starts, drawn = documents(seqlen, params)
    s, e = starts[:-1], starts[1:]
    return MaskParts(
        SliceTable.of(s, e, s, e, SliceKind.FULL), doc_starts=starts, drawn=drawn,
        varlen=VarlenForm(cu_seqlens=starts, causal=False),
    )
