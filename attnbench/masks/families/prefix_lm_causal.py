"""prefix_lm_causal: a bidirectional prefix of length p, causal after it."""

from attnbench.masks.documents import rng
from attnbench.masks.families._common import SEED
from attnbench.masks.mask import MaskParts, ParamSpec, register_mask
from attnbench.masks.slices import SliceKind, SliceTable

PREFIX = ParamSpec("prefix", int, None, "prefix length p in [1, S]; drawn uniformly from the seed if not given",
                   min=1, max_seqlen=True)


@register_mask("prefix_lm_causal", description="i < p: j < p; i >= p: j <= i", params=[PREFIX, SEED])
def prefix_lm_causal(seqlen: int, params: dict, heads: int) -> MaskParts:
    p = params["prefix"]
    if p is None:  # uniform in [1, S] from Generator(PCG64(seed))
        p = int(rng(params["seed"]).integers(1, seqlen + 1))
    table = SliceTable.concat([
        SliceTable.of(0, p, 0, p, SliceKind.FULL),
        SliceTable.of(p, seqlen, 0, seqlen, SliceKind.CAUSAL),  # j - i <= S - S = 0
    ])
    return MaskParts(table, drawn={"prefix": int(p)})
