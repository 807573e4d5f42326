"""`attnbench compare --confirm`: measure the flagged cases again, now, and keep only what reproduces.

A comparison's `regressed` and `noisy` cases (and `improved` ones) are measured again with the
code installed now, in a run of their own (`CURRENT/confirm/<run-id>/`, so `latest` still
names the current run): several rounds each, the cases visited in turn every round
(runner.rounds), the canary around every visit. That run is compared with the base run, the
machine's drift between them divided out (the base was measured at another time), and a case
keeps its flag only where the change shows again, in the same direction:

- regressed or noisy, and the confirm run says regressed: `regressed`;
- improved (or noisy, faster), and the confirm run says improved: `improved`;
- the confirm run says noisy: `noisy` (the machine was disturbed again);
- otherwise `unchanged`, the reason saying it did not reproduce;
- a case that does not end ok in the confirm run keeps its state (the note says why).

The base's own code is not run again: the base run's samples stand for it. (Running the base
commit's code beside the current one needs that commit's checkout and a worker protocol both
sides speak; not built.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from attnbench.compare.core import Comparison, State, compare_runs
from attnbench.errors import UserError
from attnbench.results.schema import Status
from attnbench.results.store import LoadedRun, load_run

#: rounds of each case in the confirm run
DEFAULT_CONFIRM_ROUNDS = 5
FLAGGED = (State.regressed, State.noisy, State.improved)
CONFIRM_DIR = "confirm"


@dataclass(frozen=True)
class ConfirmSuite:
    """The suite of a confirm run: the flagged cases of the current run, in its suite order."""

    name: str
    profile: Optional[str]
    profile_reason: str
    sha256: str
    resolved: dict[str, Any]
    cases: list
    filters: dict[str, list[Any]] = field(default_factory=dict)
    path: Optional[str] = None


def flagged_cases(cmp: Comparison, current: LoadedRun) -> list:
    """The cases to measure again: flagged in `cmp`, ok in the current run, in its record order."""
    wanted = {c.case_id for c in cmp.cases if c.state in FLAGGED}
    return [r.case for r in current.records if r.case_id in wanted and r.status is Status.ok and r.case.cp is None]


def _threads(current: LoadedRun) -> Optional[int]:
    counts = {r.timing.threads for r in current.records if r.timing is not None and r.timing.threads}
    return counts.pop() if len(counts) == 1 else None


def confirm(cmp: Comparison, base: LoadedRun, current: LoadedRun, *, rounds: int = DEFAULT_CONFIRM_ROUNDS,
            events=None) -> Comparison:
    """`cmp` with its flagged cases measured again (see the module docstring); changed in place
    and returned."""
    from attnbench.runner.run import run_suite

    if not 2 <= rounds <= 20:
        raise UserError(f"--confirm-rounds {rounds}: use 2 to 20")
    cases = flagged_cases(cmp, current)
    cmp.confirmed = {"cases": len(cases), "rounds": rounds, "reproduced": 0,
                     "how": "the current code now against the base run's samples, drift divided out"}
    if not cases:
        return cmp
    info = current.info.suite
    suite = ConfirmSuite(name=info.name, profile=info.profile, profile_reason=info.profile_reason or "",
                         sha256=info.sha256, resolved=info.document, cases=[c.with_rounds(rounds) for c in cases],
                         filters={**(info.filters or {}), "confirm": [c.key_id() for c in cases]})
    run_dir = run_suite(suite, Path(current.path) / CONFIRM_DIR, events, threads=_threads(current))
    again = load_run(run_dir)
    cmp.confirmed["run"] = str(run_dir)
    second = compare_runs(base, again, threshold=cmp.threshold, alpha=cmp.alpha,
                          allow_env_change=cmp.allow_env_change, canary_threshold=cmp.canary_threshold,
                          normalise_drift=True)
    seconds = {c.case_id: c for c in second.cases}
    records = {r.case_id: r for r in again.records}
    for c in cmp.cases:
        if c.state not in FLAGGED or c.case_id not in records:
            continue
        record, second_c = records[c.case_id], seconds.get(c.case_id)
        if record.status is not Status.ok or second_c is None:
            c.confirm = f"--confirm could not measure it again ({record.status.value}: {record.reason})"
            continue
        c.state, c.confirm = _verdict(c.state, c.ratio, second_c)
        cmp.confirmed["reproduced"] += c.state in (State.regressed, State.improved)
    cmp.cases.sort(key=lambda c: (c.state.severity, -abs(math.log(c.ratio)) if c.ratio and c.ratio > 0
                                  and math.isfinite(c.ratio) else 0.0))
    return cmp


def _verdict(state: State, ratio: Optional[float], again) -> tuple[State, str]:
    """The case's state after the confirm run's comparison `again`, and a note saying what it measured."""
    change = "" if again.change is None else f" {again.change:+.1%}"
    what = f"--confirm:{change} over {again.current.n if again.current else 0} new samples"
    slower = ratio is not None and ratio > 1
    if again.state is State.noisy:
        return State.noisy, f"{what}, noisy again ({again.reason})"
    if again.state is State.regressed and (slower or state is State.noisy):
        return State.regressed, f"{what}: reproduced"
    if again.state is State.improved and (not slower or state is State.noisy):
        return State.improved, f"{what}: reproduced"
    return State.unchanged, f"{what}: did not reproduce ({again.state.label})"
