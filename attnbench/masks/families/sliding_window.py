"""sliding_window: |i - j| <= w."""

from attnbench.masks.convert import VarlenForm
from attnbench.masks.families._common import WINDOW
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import band


@register_mask("sliding_window", description="abs(i - j) <= w", params=[WINDOW])
def sliding_window(seqlen: int, params: dict, heads: int) -> MaskParts:
    w = params["window"]
    return MaskParts(
        band(0, seqlen, 0, seqlen, -w, w),
        varlen=VarlenForm.single(seqlen, causal=False, window_left=w, window_right=w),
    )
