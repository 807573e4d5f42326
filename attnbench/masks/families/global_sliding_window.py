"""global_sliding_window: g global tokens (seen by and seeing everyone) plus a sliding window."""

from attnbench.masks.families._common import WINDOW
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask
from attnbench.masks.slices import SliceKind, SliceTable, band

GLOBAL = ParamSpec("global_tokens", int, 256, "number g of global tokens at the start", min=0)


@register_mask("global_sliding_window", description="i < g or j < g or abs(i - j) <= w", params=[GLOBAL, WINDOW])
def global_sliding_window(seqlen: int, params: dict, heads: int) -> MaskParts:
    g = min(params["global_tokens"], seqlen)
    w = params["window"]
    table = SliceTable.concat([
        SliceTable.of(0, g, 0, seqlen, SliceKind.FULL),       # global queries: every key
        SliceTable.of(g, seqlen, 0, g, SliceKind.FULL),       # everyone sees the global keys
        band(g, seqlen, g, seqlen, -w, w),                     # the window elsewhere
    ])
    return MaskParts(table)
