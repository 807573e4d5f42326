"""Paired rounds: two code paths measured side by side (runner.side_by_side), round by round.

Each round of a side-by-side measurement gives one paired observation per case: the ratio of
the current side's estimate to the base side's in that round (the faster half's median of
its samples, on thread CPU time where both sides have it; compare.core). A fresh worker
process per side and round makes the rounds independent, process effects (memory layout,
allocator state: +10% and +19% between two workers of the same code, measured on this project's machine, see
benchmarks/compare.md) included; samples within one process are not, which is why the rank
test over pooled samples is not used here. A change is confirmed when every round moved the
same way (a sign test: 5 of 5 rounds happen by chance with p = 1/32 one-sided) and the
median round ratio is beyond the threshold.

Reads records only: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from attnbench.results.schema import Record


@dataclass(frozen=True)
class PairedRounds:
    ratios: list[float]  # current / base estimate, per round both sides measured

    @property
    def rounds(self) -> int:
        return len(self.ratios)

    @property
    def median(self) -> Optional[float]:
        return float(np.median(self.ratios)) if self.ratios else None

    @property
    def slower(self) -> int:
        return sum(r > 1.0 for r in self.ratios)

    @property
    def faster(self) -> int:
        return sum(r < 1.0 for r in self.ratios)

    def describe(self) -> str:
        if not self.ratios:
            return "no round measured by both sides"
        return (f"{self.median - 1:+.1%} (median of {self.rounds} paired rounds; {self.slower} slower, "
                f"{self.faster} faster)")


def _estimate(samples: list[float]) -> Optional[float]:
    clean = sorted(s for s in samples if s is not None and math.isfinite(s) and s > 0)
    if not clean:
        return None
    half = clean[: max(1, math.ceil(len(clean) / 2))]
    return float(np.median(half))


def _round_samples(record: Record, cpu_time: bool) -> dict[int, list[float]]:
    timing = record.timing
    if timing is None or not timing.rounds:
        return {}
    out = {}
    for entry in timing.rounds:
        cpu = entry.cpu_samples_s
        use_cpu = cpu_time and timing.threads == 1 and cpu and len(cpu) == len(entry.samples_s)
        out[entry.round] = list(cpu) if use_cpu else list(entry.samples_s)
    return out


def paired_rounds(base: Record, current: Record, *, cpu_time: bool = True) -> PairedRounds:
    """The per-round ratios of two side-by-side records of one case."""
    b, c = _round_samples(base, cpu_time), _round_samples(current, cpu_time)
    ratios = []
    for number in sorted(set(b) & set(c)):
        eb, ec = _estimate(b[number]), _estimate(c[number])
        if eb and ec:
            ratios.append(ec / eb)
    return PairedRounds(ratios)


SIGN_TEST_ROUNDS = 5  # the fewest rounds whose all-one-way outcome is significant: p = 1/32 < 0.05


def confirmed_direction(pairs: PairedRounds, threshold: float) -> Optional[str]:
    """"slower" or "faster" where every round moved that way and the median beyond the threshold;
    never from fewer than SIGN_TEST_ROUNDS rounds (2 of 2 happen by chance with p = 1/4)."""
    if pairs.rounds < SIGN_TEST_ROUNDS or pairs.median is None:
        return None
    if pairs.slower == pairs.rounds and pairs.median > 1.0 + threshold:
        return "slower"
    if pairs.faster == pairs.rounds and 1.0 / pairs.median > 1.0 + threshold:
        return "faster"
    return None
