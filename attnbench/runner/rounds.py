"""Measuring in rounds: each case's repeats split over several visits spread over the run.

A run visits its cases round by round, in suite order each round (case 1, 2, ... N, then
case 1, 2, ... N again), so a disturbance of the machine (another job for a few seconds, a
clock drop) hits one visit of a case instead of all of its samples, and compare can see it.

- The first visit (round 0) is the whole protocol of runner.execute: prediction, the first
  call checked against the reference, the repeat plan for all rounds, its share of the
  timed calls, one random timed call checked, memory, the input fingerprints.
- A later visit prepares the kernel again on the same inputs (the reference is computed
  again where the inputs changed in between), warms up, times its share, checks one random
  timed call of its own against the reference and the inputs' fingerprints again. So every
  visit carries the hostile-kernel checks; memory is measured once, in the first.
- A visit that does not end ok ends the case: its record is written at once with what the
  earlier visits measured, and the case gets no more visits. Unsupported and skipped cases
  have one visit. Context-parallel cases are measured in one visit (a launch of their ranks
  costs more than the measurement; see README).

Every visit is journalled (results.store: visits.jsonl) the moment it ends; a case's record
(records.jsonl) is written when its last round is in. A run that stops early (Ctrl-C, an
error) writes the records of the cases it left between rounds with the rounds they have
(`timing.rounds` shorter than `timing.rounds_planned`, and the reason says so); `--resume`
takes their visits back from the journal and runs only the rounds still missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from attnbench.cases import MAX_ROUNDS
from attnbench.measure.timing import Iterations, later_warmup, split_repeats
from attnbench.results.schema import Record, Status, TimedCallCheck


@dataclass(frozen=True)
class Visit:
    """Which visit of a case to make: round 0 plans and checks everything; a later round
    times `iterations` (its warm-up and its share of the repeats)."""

    round: int = 0
    rounds: int = 1
    iterations: Optional[Iterations] = None

    def to_dict(self) -> dict[str, Any]:
        its = None if self.iterations is None else {"warmup": self.iterations.warmup, "repeats": self.iterations.repeats}
        return {"round": self.round, "rounds": self.rounds, "iterations": its}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Visit":
        its = data.get("iterations")
        return cls(int(data["round"]), int(data["rounds"]), None if its is None else Iterations(int(its["warmup"]), int(its["repeats"])))


def rounds_asked(case) -> int:
    """Visits the suite asks for this case: its budget's rounds, one for a CP case."""
    return 1 if case.cp is not None else int(case.budget.rounds)


@dataclass
class OpenCase:
    """A case between its rounds: the records of the visits made so far, in round order."""

    index: int
    case: Any
    visits: list[Record] = field(default_factory=list)

    @property
    def first(self) -> Record:
        return self.visits[0]

    @property
    def rounds_planned(self) -> int:
        timing = self.first.timing
        return int(timing.rounds_planned) if timing is not None and timing.rounds_planned else 1

    @property
    def done(self) -> bool:
        """No more visits: the first visit did not measure, a visit failed, or all rounds are in."""
        last = self.visits[-1]
        return (last.status is not Status.ok or self.first.timing is None
                or len(self.visits) >= self.rounds_planned)

    def next_visit(self) -> Visit:
        """The next round's visit: its warm-up and its share of the first visit's plan."""
        timing = self.first.timing
        shares = split_repeats(timing.planned_repeats or timing.repeats, self.rounds_planned)
        number = len(self.visits)
        return Visit(number, self.rounds_planned, Iterations(later_warmup(timing.warmup, self.rounds_planned), shares[number]))

    def record(self) -> Record:
        return merge_visits(self.visits)


def merge_visits(visits: list[Record]) -> Record:
    """One record from the records of a case's visits (round order): the first visit's
    fields, every round's samples and timed-call checks, the status of the first visit that
    did not end ok (its reason names the round), and when cut short, a reason saying so."""
    first = visits[0]
    if len(visits) == 1 and first.timing is not None and first.timing.complete():
        return first
    timing = first.timing
    rounds = [r for v in visits if v.timing is not None and v.timing.rounds for r in v.timing.rounds]
    update: dict[str, Any] = {"duration_s": sum(v.duration_s for v in visits)}
    if timing is not None and rounds:
        samples = [s for r in rounds for s in r.samples_s]
        p20, median, p80 = (float(x) for x in np.percentile(np.asarray(samples, dtype=np.float64), [20, 50, 80]))
        cpu = [s for r in rounds for s in (r.cpu_samples_s or [])]
        update["timing"] = timing.model_copy(update={
            "rounds": rounds, "samples_s": samples, "repeats": len(samples), "median_s": median, "p20_s": p20, "p80_s": p80,
            "cpu_samples_s": cpu if len(cpu) == len(samples) else None,
        })
        if first.flops and median > 0:
            update["tflops"] = first.flops / median / 1e12
    if first.accuracy is not None:
        checks: list[TimedCallCheck] = [c for v in visits if v.accuracy is not None for c in v.accuracy.timed_calls]
        update["accuracy"] = first.accuracy.model_copy(update={
            "timed_calls": checks, "ok": first.accuracy.ok and all(c.ok for c in checks)})
    failed = next((v for v in visits if v.status is not Status.ok), None)
    if failed is not None and failed is not first:
        number = visits.index(failed)
        update.update(status=failed.status, reason=f"round {number + 1}: {failed.reason}", detail=failed.detail)
    elif failed is None and timing is not None and timing.rounds_planned and len(rounds) < timing.rounds_planned:
        update["reason"] = f"measured in {len(rounds)} of {timing.rounds_planned} rounds (the run stopped before the rest)"
    return first.model_copy(update=update)


def visits_in_rounds(todo: list[tuple[int, Any]], started: dict[int, OpenCase],
                     open_cases: dict[int, OpenCase]) -> Iterator[tuple[OpenCase, Visit]]:
    """The visits to make, round by round in suite order: round 0 of every case in `todo` not
    yet `started`, then each later round of every case still open. The caller appends each
    visit's record to its OpenCase before asking for the next; `open_cases` holds the cases
    between their rounds (what a run that stops early writes as they are)."""
    open_cases.update(started)
    for index, case in todo:
        if index not in open_cases:
            open_cases[index] = OpenCase(index, case)
            yield open_cases[index], Visit(0, rounds_asked(case))
    for number in range(1, MAX_ROUNDS):
        for index in sorted(open_cases):
            open_case = open_cases.get(index)
            if open_case is not None and not open_case.done and len(open_case.visits) == number:
                yield open_case, open_case.next_visit()
        if not any(not c.done for c in open_cases.values()):
            return


def reopened_cases(cases: list, records: list[Record], journal: list[Record]) -> dict[int, OpenCase]:
    """The cases of a run being resumed that are between rounds (by index in `cases`), with
    their visits from the journal: those with no record, or a record of fewer rounds than
    planned that ended ok (a run stopped early writes those)."""
    by_id = {case.key_id(): i for i, case in enumerate(cases)}
    recorded = {r.case_id: r for r in records}
    visits: dict[str, list[Record]] = {}
    for visit in journal:
        visits.setdefault(visit.case_id, []).append(visit)
    out = {}
    for case_id, made in visits.items():
        record = recorded.get(case_id)
        cut_short = record is not None and record.status is Status.ok and record.timing is not None \
            and not record.timing.complete()
        if case_id not in by_id or (record is not None and not cut_short):
            continue
        made.sort(key=lambda v: v.timing.rounds[0].round if v.timing is not None and v.timing.rounds else 0)
        open_case = OpenCase(by_id[case_id], cases[by_id[case_id]], made)
        if not open_case.done:
            out[open_case.index] = open_case
    return out


def canary_summary(records: list[Record]) -> dict[str, Any]:
    """What the canary samples of a run's records say: median, p20, p80, count, and the
    seconds its probes took (its cost)."""
    rounds = [r for rec in records if rec.timing is not None and rec.timing.rounds for r in rec.timing.rounds]
    samples = [s for r in rounds for s in (*r.canary_before_s, *r.canary_after_s)]
    if not samples:
        return {"samples": 0}
    p20, median, p80 = (float(x) for x in np.percentile(np.asarray(samples, dtype=np.float64), [20, 50, 80]))
    return {"samples": len(samples), "median_s": median, "p20_s": p20, "p80_s": p80,
            "seconds": float(sum(r.canary_seconds or 0.0 for r in rounds))}
