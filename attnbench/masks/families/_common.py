"""Shared parameter specs and helpers of the built-in families (not a family: leading underscore)."""

from __future__ import annotations

import numpy as np

from attnbench.masks.documents import (
    AUTO,
    DISTRIBUTIONS,
    MAX_LENGTHS_AT,
    choose_distribution,
    sample_doc_starts,
    scaled_doc_starts,
)
from attnbench.masks.mask import ParamSpec

SEED = ParamSpec("seed", int, 42, "seed of the random draws (numpy PCG64)", min=0)
DISTRIBUTION = ParamSpec(
    "distribution", str, AUTO,
    "document-length histogram: auto (pile <= 12K, prolong64k <= 64K, prolong512k above) or a name",
    choices=(AUTO, *DISTRIBUTIONS),
)
LENGTHS_AT = ParamSpec(
    "lengths_at", int, None,
    "draw the partition of a sequence of this many tokens (histogram chosen for that length) and "
    "scale it to S, so a short S gets the documents of a long one; unset: drawn for S itself",
    min=1, max=MAX_LENGTHS_AT,
)
WINDOW = ParamSpec("window", int, 1024, "window w: keys with |i - j| <= w (causal: i - w <= j <= i)", min=0)


def documents(seqlen: int, params: dict) -> tuple[np.ndarray, dict]:
    """Document starts (S appended) and the drawn values to record (distribution actually used).

    With ``lengths_at`` R the partition is drawn for R tokens and scaled to S (see
    :func:`attnbench.masks.documents.scaled_doc_starts`)."""
    drawn_for = params.get("lengths_at") or seqlen
    dist = choose_distribution(drawn_for, params["distribution"])
    starts = sample_doc_starts(drawn_for, dist, params["seed"])
    return scaled_doc_starts(starts, seqlen), {"distribution": dist}
