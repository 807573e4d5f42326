"""causal: j <= i."""

from attnbench.masks.convert import VarlenForm
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


@register_mask("causal", description="j <= i")
def causal(seqlen: int, params: dict, heads: int) -> MaskParts:
    return MaskParts(
        SliceTable.of(0, seqlen, 0, seqlen, SliceKind.CAUSAL),
        varlen=VarlenForm.single(seqlen, causal=True),
    )
