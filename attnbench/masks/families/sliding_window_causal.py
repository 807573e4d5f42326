"""sliding_window_causal: i - w <= j <= i."""

from attnbench.masks.convert import VarlenForm
from attnbench.masks.families._common import WINDOW
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import band


@register_mask("sliding_window_causal", description="i - w <= j <= i", params=[WINDOW])
def sliding_window_causal(seqlen: int, params: dict, heads: int) -> MaskParts:
    w = params["window"]
    return MaskParts(
        band(0, seqlen, 0, seqlen, -w, 0),
        varlen=VarlenForm.single(seqlen, causal=True, window_left=w, window_right=0),
    )
