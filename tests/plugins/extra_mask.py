"""A third-party mask family, loaded through ATTNBENCH_PLUGINS by the tests."""

from attnbench.masks import MaskParts, ParamSpec, band, register_mask


@register_mask(
    "lookback",
    description="each query sees the previous `span` keys and itself (test plugin)",
    params=[ParamSpec("span", int, 8, "keys before the query", min=0)],
)
def lookback(seqlen: int, params: dict, heads: int) -> MaskParts:
    return MaskParts(band(0, seqlen, 0, seqlen, -params["span"], 0))
