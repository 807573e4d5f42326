"""Document partitions: length histograms and seeded sampling (masks.md, "Document lengths").

Random streams (all numpy ``Generator(PCG64(...))``, identical on every machine):

- ``rng(seed)``: ``Generator(PCG64(seed))``, the main stream of a mask (document lengths,
  block counts, block scores).
- ``derived_rng(seed, k)``: ``Generator(PCG64(SeedSequence(seed, spawn_key=(k,))))``, an
  independent stream for a second quantity drawn from the same seed (e.g. the prefix lengths
  of ``prefix_lm_document``), so it does not depend on how much the main stream was used.

Lengths are drawn in chunks of ``CHUNK`` documents (bins for the whole chunk, then lengths for
the whole chunk), so the length sequence of a seed is the same whatever S: a longer S only
reads further along it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from attnbench.errors import UserError

CHUNK = 1024
DISTRIBUTIONS = ("pile", "prolong64k", "prolong512k")
AUTO = "auto"


def rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def derived_rng(seed: int, key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(int(key),))))


@functools.lru_cache(maxsize=None)
def load_histogram(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, p)`` of a packaged histogram: bins ``[lo, hi)`` and normalised weights."""
    if name not in DISTRIBUTIONS:
        raise UserError(f"unknown document-length distribution {name!r} (known: {', '.join(DISTRIBUTIONS)})")
    text = resources.files("attnbench.masks").joinpath("data", "doclen", f"{name}.json").read_text()
    bins = json.loads(text)
    lo, hi, w = [], [], []
    for key, weight in bins.items():
        a, b = key.strip().lstrip("[").rstrip(")").split(",")
        lo.append(int(a))
        hi.append(int(b))
        w.append(float(weight))
    p = np.asarray(w, dtype=np.float64)
    p = p / p.sum()
    out = (np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64), p)
    for a in out:
        a.setflags(write=False)
    return out


def choose_distribution(seqlen: int, distribution: str = AUTO) -> str:
    """The histogram for S: ``pile`` up to 12K, ``prolong64k`` up to 64K, ``prolong512k`` above."""
    if distribution != AUTO:
        if distribution not in DISTRIBUTIONS:
            raise UserError(f"unknown document-length distribution {distribution!r} (known: auto, {', '.join(DISTRIBUTIONS)})")
        return distribution
    if seqlen <= 12 * 1024:
        return "pile"
    if seqlen <= 64 * 1024:
        return "prolong64k"
    return "prolong512k"


def fill_to(seqlen: int, draw_chunk) -> np.ndarray:
    """Concatenate chunks from ``draw_chunk()`` until they sum to >= seqlen; cut the last to fit.

    Returns the lengths (int64, all >= 1, sum == seqlen).
    """
    chunks = []
    total = 0
    while total < seqlen:
        c = np.asarray(draw_chunk(), dtype=np.int64)
        chunks.append(c)
        total += int(c.sum())
    lengths = np.concatenate(chunks)
    ends = np.cumsum(lengths)
    n = int(np.searchsorted(ends, seqlen, side="left")) + 1  # first document reaching S
    lengths = lengths[:n].copy()
    lengths[-1] -= int(ends[n - 1]) - seqlen
    return lengths


def sample_lengths(seqlen: int, distribution: str, seed: int) -> np.ndarray:
    """Document lengths (int64, each >= 1, summing to ``seqlen``) from a histogram."""
    lo, hi, p = load_histogram(distribution)
    g = rng(seed)

    def chunk() -> np.ndarray:
        bins = g.choice(len(p), size=CHUNK, p=p)
        return np.maximum(g.integers(lo[bins], hi[bins]), 1)

    return fill_to(seqlen, chunk)


def starts_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """Document start offsets with S appended: ``[0, l0, l0+l1, ..., S]``."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def sample_doc_starts(seqlen: int, distribution: str, seed: int) -> np.ndarray:
    return starts_from_lengths(sample_lengths(seqlen, distribution, seed))


#: the longest sequence a partition may be drawn for and scaled down from (its documents are
#: held in memory: about lengths_at / 1000 of them)
MAX_LENGTHS_AT = 1 << 24


def scaled_doc_starts(starts: np.ndarray, seqlen: int) -> np.ndarray:
    """Document starts ``[0, ..., R]`` of an R-token partition mapped onto ``[0, S]``.

    Each boundary moves to ``round(b * S / R)``; documents that become empty (shorter than
    R / S tokens before scaling) merge into the next one, so every document keeps >= 1 token.
    R == S returns the partition unchanged (the spec's draw for S itself).
    """
    drawn_for = int(starts[-1])
    if drawn_for == seqlen:
        return starts
    scaled = np.rint(starts.astype(np.float64) * (seqlen / drawn_for)).astype(np.int64)
    scaled[0], scaled[-1] = 0, seqlen
    return np.unique(scaled)
