"""Shared parameter specs and helpers of the built-in families (not a family: leading underscore)."""

from __future__ import annotations

import numpy as np

from attnbench.masks.documents import AUTO, DISTRIBUTIONS, choose_distribution, sample_doc_starts
from attnbench.masks.mask import ParamSpec

SEED = ParamSpec("seed", int, 42, "seed of the random draws (numpy PCG64)", min=0)
DISTRIBUTION = ParamSpec(
    "distribution", str, AUTO,
    "document-length histogram: auto (pile <= 12K, prolong64k <= 64K, prolong512k above) or a name",
    choices=(AUTO, *DISTRIBUTIONS),
)
WINDOW = ParamSpec("window", int, 1024, "window w: keys with |i - j| <= w (causal: i - w <= j <= i)", min=0)


def documents(seqlen: int, params: dict) -> tuple[np.ndarray, dict]:
    """Document starts (S appended) and the drawn values to record (distribution actually used)."""
    dist = choose_distribution(seqlen, params["distribution"])
    starts = sample_doc_starts(seqlen, dist, params["seed"])
    return starts, {"distribution": dist}
