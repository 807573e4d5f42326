"""causal_sink_window: attention-sink tokens plus a causal sliding window (StreamingLLM)."""

from attnbench.masks.families._common import WINDOW
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask
from attnbench.masks.slices import SliceTable, band

SINK = ParamSpec("sink", int, 4, "number s of attention-sink tokens at the start", min=0)


@register_mask("causal_sink_window", description="j <= i and (j < s or i - j <= w)", params=[SINK, WINDOW])
def causal_sink_window(seqlen: int, params: dict, heads: int) -> MaskParts:
    s = min(params["sink"], seqlen)
    w = params["window"]
    table = SliceTable.concat([
        band(0, seqlen, 0, s, hi=0),             # sink keys: j < s and j <= i
        band(0, seqlen, s, seqlen, -w, 0),       # other keys: causal window
    ])
    return MaskParts(table)
