"""prefix_lm_document: a prefix LM inside every document.

p_d is drawn uniformly in [1, len(D_d)] from ``derived_rng(seed, 1)`` (one vectorised draw
for all documents, in document order), a stream independent of the partition's.
"""

from attnbench.masks.documents import derived_rng
from attnbench.masks.families._common import DISTRIBUTION, LENGTHS_AT, SEED, documents
from attnbench.masks.mask import MaskParts, register_mask
from attnbench.masks.slices import SliceKind, SliceTable


def prefix_lengths(doc_starts, seed: int):
    """The prefix length of every document (also used by the tests' oracle)."""
    lengths = doc_starts[1:] - doc_starts[:-1]
    return derived_rng(seed, 1).integers(1, lengths + 1)


@register_mask(
    "prefix_lm_document",
    description="per document d with prefix p_d: prefix queries see the whole prefix; later ones start(d) <= j <= i",
    params=[DISTRIBUTION, SEED, LENGTHS_AT], uses_documents=True,
)
def prefix_lm_document(seqlen: int, params: dict, heads: int) -> MaskParts:
    starts, drawn = documents(seqlen, params)
    s, e = starts[:-1], starts[1:]
    p_end = s + prefix_lengths(starts, params["seed"])
    table = SliceTable.concat([
        SliceTable.of(s, p_end, s, p_end, SliceKind.FULL),
        SliceTable.of(p_end, e, s, e, SliceKind.CAUSAL),  # j - i <= e - e = 0
    ])
    return MaskParts(table, doc_starts=starts, drawn=drawn)
