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

Where the base's code path can be run (`BaseCode`: a source tree whose attnbench the base
worker imports, e.g. a `git worktree` of the base commit, and/or environment variables that
differ, e.g. plugins), the confirm run measures it too, side by side: two worker processes,
one per code path and round, each case visited by both in every round (the order
alternating each round), so both see the same machine (`CURRENT/confirm/<run-id>-base/` and
`-current/`); a change is confirmed when every round moved the same way and the median
round's ratio is beyond the threshold (compare.paired). Otherwise the base run's samples stand for
the base and the current code is measured alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from attnbench.compare.core import Comparison, State, compare_runs
from attnbench.compare.paired import SIGN_TEST_ROUNDS, confirmed_direction, paired_rounds
from attnbench.errors import UserError
from attnbench.results.schema import Status
from attnbench.results.store import LoadedRun, load_run

#: rounds of each case in the confirm run
DEFAULT_CONFIRM_ROUNDS = 5
FLAGGED = (State.regressed, State.noisy, State.improved)
CONFIRM_DIR = "confirm"


@dataclass(frozen=True)
class BaseCode:
    """How to run the base's code path beside the current one: a source tree whose attnbench
    its worker imports (None: this one) and environment variables set (value) or removed (None)."""

    source_dir: Optional[str] = None
    env: dict[str, Optional[str]] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"source {self.source_dir}"] if self.source_dir else []
        parts += [f"{k}={v}" if v is not None else f"{k} unset" for k, v in self.env.items()]
        return ", ".join(parts) or "the same code"


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
            events=None, base_code: Optional[BaseCode] = None) -> Comparison:
    """`cmp` with its flagged cases measured again (see the module docstring); changed in place
    and returned."""
    from attnbench.runner.run import run_suite

    if not 2 <= rounds <= 20:
        raise UserError(f"--confirm-rounds {rounds}: use 2 to 20")
    if base_code is not None and rounds < SIGN_TEST_ROUNDS:
        raise UserError(f"--confirm-rounds {rounds}: side by side needs at least {SIGN_TEST_ROUNDS} rounds "
                        f"(its verdict is a sign test: {SIGN_TEST_ROUNDS} of {SIGN_TEST_ROUNDS} one way by chance, "
                        f"p = 1/{2 ** SIGN_TEST_ROUNDS})")
    cases = flagged_cases(cmp, current)
    how = (f"the current and the base code ({base_code.describe()}) side by side, now" if base_code is not None
           else "the current code now against the base run's samples, drift divided out")
    cmp.confirmed = {"cases": len(cases), "rounds": rounds, "reproduced": 0, "how": how}
    if not cases:
        return cmp
    info = current.info.suite
    suite = ConfirmSuite(name=info.name, profile=info.profile, profile_reason=info.profile_reason or "",
                         sha256=info.sha256, resolved=info.document, cases=[c.with_rounds(rounds) for c in cases],
                         filters={**(info.filters or {}), "confirm": [c.key_id() for c in cases]})
    out = Path(current.path) / CONFIRM_DIR
    if base_code is None:
        run_dir = run_suite(suite, out, events, threads=_threads(current))
        reference, again = base, load_run(run_dir)
    else:
        from attnbench.runner.side_by_side import Side, run_side_by_side

        base_dir, run_dir = run_side_by_side(suite, out, [Side("base", base_code.source_dir, base_code.env), Side("current")],
                                             events, threads=_threads(current))
        reference, again = load_run(base_dir), load_run(run_dir)
        cmp.confirmed["base_run"] = str(base_dir)
    cmp.confirmed["run"] = str(run_dir)
    second = compare_runs(reference, again, threshold=cmp.threshold, alpha=cmp.alpha,
                          allow_env_change=cmp.allow_env_change, canary_threshold=cmp.canary_threshold,
                          normalise_drift=base_code is None, cpu_time=cmp.cpu_time)
    seconds = {c.case_id: c for c in second.cases}
    records = {r.case_id: r for r in again.records}
    base_records = {r.case_id: r for r in reference.records}
    for c in cmp.cases:
        if c.state not in FLAGGED or c.case_id not in records:
            continue
        record, second_c = records[c.case_id], seconds.get(c.case_id)
        base_record = base_records.get(c.case_id)
        if record.status is not Status.ok or second_c is None or (
                base_code is not None and (base_record is None or base_record.status is not Status.ok)):
            c.confirm = f"--confirm could not measure it again ({record.status.value}: {record.reason})"
            continue
        if base_code is not None:
            c.state, c.confirm = _paired_verdict(c.state, c.ratio, base_record, record, cmp)
        else:
            c.state, c.confirm = _verdict(c.state, c.ratio, second_c)
        cmp.confirmed["reproduced"] += c.state in (State.regressed, State.improved)
    cmp.cases.sort(key=lambda c: (c.state.severity, -abs(math.log(c.ratio)) if c.ratio and c.ratio > 0
                                  and math.isfinite(c.ratio) else 0.0))
    return cmp


def _paired_verdict(state: State, ratio: Optional[float], base_record, record, cmp) -> tuple[State, str]:
    """The case's state from its side-by-side rounds (compare.paired)."""

    pairs = paired_rounds(base_record, record, cpu_time=cmp.cpu_time)
    direction = confirmed_direction(pairs, cmp.threshold)
    what = f"--confirm side by side: {pairs.describe()}"
    slower = ratio is not None and ratio > 1
    if direction == "slower" and (slower or state is State.noisy):
        return State.regressed, f"{what}: reproduced"
    if direction == "faster" and (not slower or state is State.noisy):
        return State.improved, f"{what}: reproduced"
    return State.unchanged, f"{what}: did not reproduce"


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
