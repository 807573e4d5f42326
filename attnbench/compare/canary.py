"""What the canary (measure.canary) says about a comparison: disturbed rounds, noisy cases, drift.

Every visit of a case (runner.rounds) has the canary timed right before and right after it.
Compare reads three things from those samples:

- a run's *usual* canary time: the median of all its canary samples (run.json `canary`, else
  the records');
- a *disturbed round*: a visit whose canary median is more than the canary threshold above
  its run's usual time (another job took the core for a while). Its samples are left out of
  the comparison when the case has undisturbed rounds left;
- a case's *canary ratio*: the canary around the case's kept rounds in the current run over
  the same in the base run (drift divided out with `--normalise-drift`). A change of the case
  is only believed when its canary ratio is within the threshold: otherwise the machine, not
  the code, moved, and the case is `noisy`.

The *drift* between two runs is the ratio of their usual canary times, where both ran the
same canary workload: machine-wide, it is reported, and `--normalise-drift` divides the
current samples by it.

Reads records only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from attnbench.results.schema import Record, RoundTiming
from attnbench.results.store import LoadedRun

#: a round whose canary is this much above its run's usual is disturbed (0.25 = 25% slower)
DEFAULT_CANARY_THRESHOLD = 0.25


def _median(values: list[float]) -> Optional[float]:
    clean = [v for v in values if v is not None and v > 0]
    return float(np.median(np.asarray(clean, dtype=np.float64))) if clean else None


def round_canary(entry: RoundTiming) -> Optional[float]:
    """The canary's median around one visit (before and after), or None where it was not timed."""
    return _median([*entry.canary_before_s, *entry.canary_after_s])


@dataclass(frozen=True)
class RunCanary:
    """A run's canary: its workload's name and its usual (median) time."""

    workload: Optional[str]
    median_s: Optional[float]

    @classmethod
    def of(cls, run: LoadedRun) -> "RunCanary":
        info = run.info.canary or {}
        workload = (info.get("workload") or {}).get("name")
        median = info.get("median_s")
        if median is None:  # a run that did not end cleanly: from its records
            median = _median([s for r in run.records if r.timing is not None and r.timing.rounds
                              for entry in r.timing.rounds for s in (*entry.canary_before_s, *entry.canary_after_s)])
        return cls(workload, float(median) if median else None)


def drift(base: RunCanary, current: RunCanary) -> Optional[float]:
    """current / base usual canary time (> 1: the machine was slower for the current run), or
    None where either has no canary or they ran different workloads."""
    if base.median_s is None or current.median_s is None or base.workload != current.workload:
        return None
    return current.median_s / base.median_s


@dataclass
class KeptSamples:
    """The samples of one side of a case that the comparison uses, and what was left out."""

    samples: list[float]
    canary_s: Optional[float]  # the canary's median around the kept rounds
    #: the kept samples' thread CPU times (measure.timing; CPU records), None where any is missing
    cpu_samples: Optional[list[float]] = None
    rounds: int = 0  # rounds in the record (0: no round entries, an older record)
    disturbed: int = 0  # rounds left out, or, where every round was disturbed, all of them (kept)

    @property
    def all_disturbed(self) -> bool:
        return self.rounds > 0 and self.disturbed >= self.rounds


def kept_samples(record: Record, usual_s: Optional[float], threshold: float) -> KeptSamples:
    """The record's samples without its disturbed rounds (all of them where none is undisturbed)."""
    timing = record.timing
    if timing is None:
        return KeptSamples([], None)
    entries = list(timing.rounds or [])
    if not entries:
        cpu = timing.cpu_samples_s
        return KeptSamples(list(timing.samples_s), None, list(cpu) if cpu and len(cpu) == len(timing.samples_s) else None)
    levels = [round_canary(e) for e in entries]
    limit = None if usual_s is None else usual_s * (1.0 + threshold)
    clean = [e for e, level in zip(entries, levels) if limit is None or level is None or level <= limit]
    disturbed = len(entries) - len(clean)
    kept = clean or entries
    canary = _median([s for e in kept for s in (*e.canary_before_s, *e.canary_after_s)])
    whole = all(e.cpu_samples_s and len(e.cpu_samples_s) == len(e.samples_s) for e in kept)
    cpu = [s for e in kept for s in e.cpu_samples_s] if whole else None
    return KeptSamples([s for e in kept for s in e.samples_s], canary, cpu, len(entries), disturbed)
