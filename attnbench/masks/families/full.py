"""full: every query attends to every key."""

from attnbench.masks.convert import VarlenForm
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


@register_mask("full", description="allowed(i, j) always")
def full(seqlen: int, params: dict, heads: int) -> MaskParts:
    return MaskParts(
        SliceTable.of(0, seqlen, 0, seqlen, SliceKind.FULL),
        varlen=VarlenForm.single(seqlen, causal=False),
    )
