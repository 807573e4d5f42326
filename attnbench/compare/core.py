"""Compare two runs case by case: ratio of medians, significance on the raw samples, states.

A case is matched across runs by its `case_id` (the hash of `Case.key()`: kernel or CP
method, mask with its parameters and seed, shape, dtype, pass, world size). For a case
measured in both runs the verdict needs BOTH

- significance: a two-sided Mann-Whitney U test on the stored samples (p < alpha), or,
  where there are too few samples for the test to ever reach alpha, disjoint sample ranges;
- size: the median moved by more than `threshold` (current/base > 1 + threshold is a
  regression, base/current > 1 + threshold an improvement).

With enough samples (twice what the rank test needs a side: 10 at alpha 0.01) the size is
that of the *faster half* of each side's samples (`fast_half`; the test stays on all of them,
where its p-value is exact): what a loaded machine does to a
timing is one-sided (a preempted sample is ~10 ms slower, never faster), and on a shared
machine the share of preempted samples swings from run to run, which moves a median (even
from one mode of the samples to the other) without the code changing. The faster half's
median (about the p25) moves with the code and not with that share, up to half the samples.

CPU_TIME: a CPU case timed on one torch thread (the default) is compared on its samples'
thread CPU time (measure.timing records it beside the wall time): the work's own time,
without the ~10 ms slices it waits for a core on a shared machine, which on two loaded
cores make a 2 ms kernel's samples 2 or 12 ms at random. Wall time where any sample lacks it
(older records, CUDA, several threads) or with `cpu_time=False` (`--wall-time`).

The canary (compare.canary) decides whether such a change is believed: rounds measured while
the machine was disturbed are left out, and a change measured while the canary itself moved
by more than the canary threshold is `noisy`, not `regressed` (or `improved`). The drift of
the machine between the two runs is reported; `normalise_drift` divides it out.

Everything here reads records only: no kernel, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional

import numpy as np

from attnbench.compare.canary import DEFAULT_CANARY_THRESHOLD, RunCanary, drift, kept_samples
from attnbench.compare.environment import (
    EnvDifference,
    env_differences,
    informational_differences,
    throttle_reasons,
)
from attnbench.errors import UserError
from attnbench.results.schema import Record, Status
from attnbench.results.store import LoadedRun

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
FAILURES = frozenset({Status.oom, Status.error, Status.invalid, Status.timeout})
NOT_RUN = frozenset({Status.unsupported, Status.skipped})
# relative median shift detectable with ~80% power at alpha 0.05, per unit of p80/p20 spread,
# times sqrt(n): 2.8 standard errors of a difference of medians (1.77 sigma / sqrt(n)) over
# the p20..p80 width of a normal (1.68 sigma)
DETECT_FACTOR = 3.0


class State(str, Enum):
    new_failure = "new_failure"  # was not failing (ok, unsupported, skipped) -> oom/error/invalid/timeout
    regressed = "regressed"  # significantly slower by more than the threshold
    noisy = "noisy"  # would be regressed or improved, but measured while the canary was off (compare.canary)
    incomparable = "incomparable"  # environment, device or timing method differ; or no longer measured
    removed = "removed"  # only in the base run
    fixed = "fixed"  # failing -> ok
    improved = "improved"  # significantly faster by more than the threshold
    added = "added"  # only in the current run, or newly measured
    unchanged = "unchanged"

    @property
    def severity(self) -> int:
        return list(State).index(self)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


FAIL_ON = ("regression", "failure", "never")


@dataclass
class SampleStats:
    n: int
    median_s: float
    p20_s: float
    p80_s: float
    #: what the comparison compares: the median of the faster half (all samples where few; core.fast_half)
    estimate_s: Optional[float] = None

    @property
    def spread(self) -> float:
        """p80/p20 - 1: the relative width of the middle 60% of the samples."""
        return self.p80_s / self.p20_s - 1.0 if self.p20_s > 0 else math.inf


@dataclass
class CaseComparison:
    case_id: str
    key: dict[str, Any]
    label: str
    group: str  # kernel, or CP method
    device: str
    state: State
    base_status: Optional[str] = None
    current_status: Optional[str] = None
    base: Optional[SampleStats] = None
    current: Optional[SampleStats] = None
    ratio: Optional[float] = None  # current median / base median (time: > 1 is slower)
    p_value: Optional[float] = None
    test: Optional[str] = None  # "mann-whitney" or "disjoint ranges"
    significant: Optional[bool] = None
    reason: Optional[str] = None  # why this state, in words
    noise: Optional[str] = None  # too noisy to detect the threshold: what to do
    throttled: list[str] = field(default_factory=list)  # e.g. "current: SwPowerCap"
    #: the canary around the case's kept rounds, current over base (drift divided out where normalised)
    canary_ratio: Optional[float] = None
    #: rounds left out as disturbed, per side, e.g. {"base": "1/3", "current": "0/3"}
    disturbed_rounds: dict[str, str] = field(default_factory=dict)
    #: what `compare --confirm` measured for this case (runner.confirm), in words
    confirm: Optional[str] = None
    #: the clock compared: "wall" or "thread cpu" (CPU records of one thread; core.CPU_TIME)
    timer: Optional[str] = None

    @property
    def change(self) -> Optional[float]:
        return None if self.ratio is None else self.ratio - 1.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        out["change"] = self.change
        return out


@dataclass
class RunSide:
    run_id: str
    path: str
    suite: str
    started_at: str
    state: str

    @classmethod
    def of(cls, run: LoadedRun) -> "RunSide":
        info = run.info
        return cls(info.run_id, str(run.path), info.suite.name, info.started_at, info.state)


@dataclass
class Comparison:
    base: RunSide
    current: RunSide
    threshold: float
    alpha: float
    allow_env_change: bool
    cases: list[CaseComparison]
    env_differences: dict[str, list[EnvDifference]]  # device type -> differences that matter
    info_differences: list[EnvDifference]
    warnings: list[str]
    geomeans: dict[str, dict[str, float]]  # group -> {ratio, cases}
    advice: list[str] = field(default_factory=list)  # what to do about noisy cases
    canary_threshold: float = DEFAULT_CANARY_THRESHOLD
    cpu_time: bool = True  # CPU_TIME: one-thread CPU records compared on thread CPU time
    #: the machine's drift between the runs (compare.canary): ratio, both usual canary times,
    #: the workload, and whether it was divided out
    drift: dict[str, Any] = field(default_factory=dict)
    #: `compare --confirm` (runner.confirm): the run it measured, rounds, cases re-measured
    confirmed: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for c in self.cases:
            out[c.state.value] += 1
        return out

    def exit_code(self, fail_on: str = "regression") -> int:
        if fail_on not in FAIL_ON:
            raise UserError(f"--fail-on {fail_on!r}: use one of {', '.join(FAIL_ON)}")
        counts = self.counts()
        if fail_on == "never":
            return 0
        if counts[State.new_failure.value]:
            return 1
        if fail_on == "regression" and counts[State.regressed.value]:
            return 1
        return 0

    def to_dict(self, fail_on: str = "regression") -> dict[str, Any]:
        return {
            "base": asdict(self.base),
            "current": asdict(self.current),
            "threshold": self.threshold,
            "alpha": self.alpha,
            "canary_threshold": self.canary_threshold,
            "cpu_time": self.cpu_time,
            "drift": self.drift,
            "confirmed": self.confirmed,
            "allow_env_change": self.allow_env_change,
            "counts": self.counts(),
            "exit_code": self.exit_code(fail_on),
            "fail_on": fail_on,
            "environment": {
                "differences": {dev: [asdict(d) for d in diffs] for dev, diffs in self.env_differences.items()},
                "informational": [asdict(d) for d in self.info_differences],
            },
            "geomeans": self.geomeans,
            "warnings": self.warnings,
            "advice": self.advice,
            "cases": [c.to_dict() for c in self.cases],
        }


# -- statistics --------------------------------------------------------------------------


def stats_of(samples: list[float]) -> Optional[SampleStats]:
    arr = np.asarray([s for s in samples if s is not None and math.isfinite(s)], dtype=np.float64)
    if arr.size == 0:
        return None
    p20, med, p80 = np.percentile(arr, [20, 50, 80], method="linear")
    return SampleStats(int(arr.size), float(med), float(p20), float(p80))


def min_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test can give for these sizes."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def fast_half(samples: list[float], alpha: float) -> list[float]:
    """The faster half of `samples` (see the module docstring), or all of them where halving
    would leave too few for the rank test."""
    if len(samples) < 2 * min_samples(alpha):
        return list(samples)
    ordered = sorted(samples)
    return ordered[: math.ceil(len(ordered) / 2)]


def min_samples(alpha: float) -> int:
    """The fewest samples per side with which the rank test can reach `alpha`."""
    n = 2
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def significance(base: list[float], current: list[float], alpha: float) -> tuple[bool, Optional[float], str]:
    """(significant, p-value or None, test name) for a difference in location.

    Mann-Whitney U where the sample counts let it reach `alpha`; with fewer (3 to 4 per side
    at alpha 0.01) the sample ranges must not overlap, a weaker test (p >= 0.03); with fewer
    than 3 on a side nothing is called significant."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return False, None, "too few samples"
    if min_p_value(a.size, b.size) < alpha:
        from scipy.stats import mannwhitneyu

        if np.ptp(np.concatenate([a, b])) == 0:
            return False, 1.0, "mann-whitney"
        p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
        if not math.isfinite(p):
            p = 1.0
        return p < alpha, p, "mann-whitney"
    if min(a.size, b.size) < 3:
        return False, None, "too few samples"
    disjoint = a.max() < b.min() or b.max() < a.min()
    return bool(disjoint), None, "disjoint ranges"


def noise_advice(base: SampleStats, current: SampleStats, threshold: float) -> Optional[str]:
    """A short note when the spread is too wide for the samples to resolve `threshold`
    (what to do about it in general is `NOISE_ADVICE`)."""
    spread = max(base.spread, current.spread)
    n = min(base.n, current.n)
    if not math.isfinite(spread):
        return "noisy: a p20 of zero, the timer cannot resolve this case; make it larger"
    detectable = DETECT_FACTOR * spread / math.sqrt(max(n, 1))
    if detectable <= threshold:
        return None
    needed = math.ceil((DETECT_FACTOR * spread / threshold) ** 2)
    width = f"{spread:.1%}" if spread < 1 else f"{spread + 1:.1f}x"
    return f"noisy: p80/p20 spread {width} with n={n} resolves ~{detectable:.0%} > {threshold:.0%}; needs ~{needed} repeats"


def noise_advice_for(device: str) -> str:
    """What to do about noisy cases, by device type."""
    if device.startswith("cuda"):
        how = "CUDA graphs for short kernels, locked clocks (nvidia-smi -lgc/-lmc), an otherwise idle GPU"
    else:
        how = "an otherwise idle machine, pinned threads (taskset, OMP_NUM_THREADS), larger cases"
    return f"raise the repeats (suite budget: min_repeats, measure_seconds) or reduce the noise: {how}"


def _samples(record: Record) -> list[float]:
    return list(record.timing.samples_s) if record.timing is not None else []


def _group(key: dict[str, Any]) -> str:
    return str(key.get("cp_method") or key.get("kernel") or "?")


def _throttle(record: Record, run_nvml: Any) -> list[str]:
    """Throttle reasons of a record's own NVML snapshot, else of its run's snapshot."""
    return throttle_reasons(record.nvml if record.nvml is not None else run_nvml)


def _index(run: LoadedRun, warnings: list[str], side: str) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for record in run.records:
        if record.case_id in out:
            warnings.append(f"{side} run {run.info.run_id}: case {record.case.label()} appears twice; the last record is used")
        out[record.case_id] = record
    return out


# -- one case ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryView:
    """How the canary enters one comparison (compare.canary): each run's usual canary time, the
    canary threshold, and the factor the current samples are divided by (the drift, or 1)."""

    base_usual_s: Optional[float] = None
    current_usual_s: Optional[float] = None
    threshold: float = DEFAULT_CANARY_THRESHOLD
    scale: float = 1.0
    cpu_time: bool = True  # compare CPU records of one thread on their thread CPU time


def _on_cpu_time(b: Record, r: Record, kept_b, kept_c, view: CanaryView) -> bool:
    """Whether both sides are CPU records timed on one thread with every kept sample's CPU time."""
    return (view.cpu_time and kept_b.cpu_samples is not None and kept_c.cpu_samples is not None
            and all(x.timing is not None and x.timing.threads == 1 and not x.case.device.startswith("cuda")
                    for x in (b, r)))


def _compare_measured(c: CaseComparison, b: Record, r: Record, threshold: float, alpha: float,
                      canary: CanaryView = CanaryView()) -> None:
    kept_b = kept_samples(b, canary.base_usual_s, canary.threshold)
    kept_c = kept_samples(r, canary.current_usual_s, canary.threshold)
    on_cpu = _on_cpu_time(b, r, kept_b, kept_c, canary)
    c.timer = "thread cpu" if on_cpu else "wall"
    base_samples = kept_b.cpu_samples if on_cpu else kept_b.samples
    current_samples = [s / canary.scale for s in (kept_c.cpu_samples if on_cpu else kept_c.samples)]
    for side, kept in (("base", kept_b), ("current", kept_c)):
        if kept.rounds > 1 or kept.disturbed:
            c.disturbed_rounds[side] = f"{kept.disturbed}/{kept.rounds}"
    if kept_b.canary_s and kept_c.canary_s:
        c.canary_ratio = kept_c.canary_s / kept_b.canary_s / canary.scale
    bs, cs = stats_of(base_samples), stats_of(current_samples)
    if bs is None or cs is None:
        c.state = State.incomparable
        c.reason = f"no timing samples in the {'base' if bs is None else 'current'} record"
        return
    # both sides halved, or neither (too few samples on one): the same statistic on both
    halves = min(len(base_samples), len(current_samples)) >= 2 * min_samples(alpha)
    fast_b, fast_c = (fast_half(base_samples, alpha), fast_half(current_samples, alpha)) if halves \
        else (base_samples, current_samples)
    bs.estimate_s, cs.estimate_s = stats_of(fast_b).median_s, stats_of(fast_c).median_s
    c.base, c.current = bs, cs
    c.ratio = cs.estimate_s / bs.estimate_s if bs.estimate_s > 0 else math.inf
    c.significant, c.p_value, c.test = significance(base_samples, current_samples, alpha)
    what = ("faster-half median" if halves else "median") + (" of thread CPU time" if on_cpu else "")
    c.noise = noise_advice(bs, cs, threshold)
    if c.test in ("disjoint ranges", "too few samples"):
        weak = "no significance test possible" if c.test == "too few samples" else "only disjoint ranges count"
        few = f"few samples (n={bs.n} vs {cs.n}): {weak}; use at least {min_samples(alpha)} repeats"
        c.noise = few if c.noise is None else f"{few}; {c.noise}"
    slower = c.ratio > 1.0 + threshold
    faster = c.ratio > 0 and 1.0 / c.ratio > 1.0 + threshold
    if c.significant and slower:
        c.state = State.regressed
        c.reason = f"{c.change:+.1%} ({what} {bs.estimate_s * 1e3:.4g} -> {cs.estimate_s * 1e3:.4g} ms)"
    elif c.significant and faster:
        c.state = State.improved
        c.reason = f"{c.change:+.1%} ({what} {bs.estimate_s * 1e3:.4g} -> {cs.estimate_s * 1e3:.4g} ms)"
    else:
        c.state = State.unchanged
        if slower or faster:
            c.reason = f"{c.change:+.1%} but not significant ({c.test}" + (
                f", p={c.p_value:.2g})" if c.p_value is not None else ")"
            )
        elif c.significant:
            c.reason = f"{c.change:+.1%}: significant but within the {threshold:.0%} threshold"
    if c.state in (State.regressed, State.improved):
        machine = _machine_moved(kept_b, kept_c, c.canary_ratio, canary.threshold, c.ratio, threshold)
        resolves = resolution(fast_b, fast_c)
        size = c.ratio - 1.0 if c.state is State.regressed else 1.0 / c.ratio - 1.0
        if machine:
            c.reason = f"{c.reason}, but {machine}: the machine moved, not (only) the code"
            c.state = State.noisy
        elif size < resolves:
            c.reason = f"{c.reason}, but within the noise: these samples resolve ~{resolves:.0%}"
            c.state = State.noisy


def resolution(base: list[float], current: list[float]) -> float:
    """The smallest relative change the samples that decide can tell from their own noise:
    DETECT_FACTOR x the wider p80/p20 spread / sqrt(the smaller count). A change below it is
    `noisy`: significant to the rank test, but no larger than what the two runs' samples
    moved by themselves (two runs on a shared machine differ by more than one run's samples
    vary, so the rank test alone calls such changes often)."""
    b, c = stats_of(base), stats_of(current)
    if b is None or c is None:
        return math.inf
    return DETECT_FACTOR * max(b.spread, c.spread) / math.sqrt(max(1, min(b.n, c.n)))


def _machine_moved(kept_b, kept_c, canary_ratio: Optional[float], limit: float, ratio: float,
                   threshold: float) -> Optional[str]:
    """Why the canary says this case's change cannot be believed, or None. A change larger than
    the canary's own move by more than the threshold stands: the machine explains only its part."""
    sides = [side for side, kept in (("base", kept_b), ("current", kept_c)) if kept.all_disturbed]
    moved = canary_ratio is not None and max(canary_ratio, 1.0 / canary_ratio) > 1.0 + limit
    if not sides and not moved:
        return None
    if canary_ratio is not None and max(ratio / canary_ratio, canary_ratio / ratio) > 1.0 + threshold \
            and (ratio > 1.0) == (ratio / canary_ratio > 1.0):
        return None
    if sides:
        return f"every round of the {' and '.join(sides)} run's measurement was disturbed (canary)"
    return f"the canary around it moved {canary_ratio - 1:+.0%} between the runs"


def compare_case(
    case_id: str,
    b: Optional[Record],
    r: Optional[Record],
    *,
    threshold: float,
    alpha: float,
    env_diffs: dict[str, list[EnvDifference]],
    allow_env_change: bool,
    run_nvml: tuple[Any, Any] = (None, None),
    canary: CanaryView = CanaryView(),
) -> CaseComparison:
    either = r if r is not None else b
    assert either is not None
    device = either.case.device
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    c = CaseComparison(
        case_id=case_id,
        key=either.key,
        label=either.case.label(),
        group=_group(either.key),
        device=device,
        state=State.unchanged,
        base_status=b.status.value if b is not None else None,
        current_status=r.status.value if r is not None else None,
    )
    if b is None:
        c.state, c.reason = State.added, "only in the current run"
        return c
    if r is None:
        c.state, c.reason = State.removed, "only in the base run"
        return c
    for side, record, nvml in (("base", b, run_nvml[0]), ("current", r, run_nvml[1])):
        if record.status is Status.ok:
            c.throttled += [f"{side}: {reason}" for reason in _throttle(record, nvml)]

    diffs = env_diffs.get(dev_type, [])
    if diffs and not allow_env_change:
        c.state = State.incomparable
        c.reason = "; ".join(str(d) for d in diffs) + " (--allow-env-change to compare anyway)"
        return c
    if b.case.device != r.case.device:
        c.state, c.reason = State.incomparable, f"device {b.case.device} -> {r.case.device}"
        return c

    bst, rst = b.status, r.status
    if bst is Status.ok and rst is Status.ok:
        if b.timing and r.timing and b.timing.method != r.timing.method:
            c.state = State.incomparable
            c.reason = f"timing method {b.timing.method} -> {r.timing.method}"
            return c
        _compare_measured(c, b, r, threshold, alpha, canary)
    elif rst in FAILURES and bst not in FAILURES:
        c.state = State.new_failure
        c.reason = f"{bst.value} -> {rst.value}" + (f": {r.reason}" if r.reason else "")
    elif bst in FAILURES and rst is Status.ok:
        c.state, c.reason = State.fixed, f"{bst.value} -> ok"
    elif bst in FAILURES and rst in FAILURES:
        c.state = State.unchanged
        c.reason = f"still {rst.value}" if bst is rst else f"{bst.value} -> {rst.value}"
    elif bst in NOT_RUN and rst is Status.ok:
        c.state, c.reason = State.added, f"newly measured (was {bst.value})"
    elif bst in NOT_RUN and rst in NOT_RUN:
        c.state, c.reason = State.unchanged, f"still not run ({rst.value})"
    else:  # measured or failing before, not attempted now
        c.state = State.incomparable
        c.reason = f"not measured now: {bst.value} -> {rst.value}" + (f" ({r.reason})" if r.reason else "")
    return c


# -- two runs --------------------------------------------------------------------------


def geometric_means(cases: list[CaseComparison]) -> dict[str, dict[str, float]]:
    """Per kernel (or CP method): geometric mean of current/base median time over measured cases."""
    logs: dict[str, list[float]] = {}
    for c in cases:
        if c.state in (State.regressed, State.improved, State.unchanged) and c.ratio and c.ratio > 0 and math.isfinite(c.ratio):
            logs.setdefault(c.group, []).append(math.log(c.ratio))
    return {g: {"ratio": math.exp(sum(v) / len(v)), "cases": len(v)} for g, v in sorted(logs.items())}


def nothing_to_compare(base: LoadedRun, current: LoadedRun) -> Optional[str]:
    """Why these two runs cannot be compared at all (the same run twice, no case in common), or None."""
    if base.path.resolve() == current.path.resolve() or base.info.run_id == current.info.run_id:
        return (f"BASE and CURRENT are the same run, {current.info.run_id}: nothing to compare "
                "(e.g. `attnbench compare latest~1 latest`)")
    in_base = {r.case_id for r in base.records}
    in_current = {r.case_id for r in current.records}
    if in_base and in_current and not in_base & in_current:
        def side(run: LoadedRun, n: int) -> str:
            suite = run.info.suite
            what = f"suite {suite.name!r}" + (f", profile {suite.profile}" if suite.profile else "")
            return f"{run.info.run_id} has {n} case(s) of {what}" + (f", filters {suite.filters}" if suite.filters else "")
        return (f"no case in common: {side(base, len(in_base))}; {side(current, len(in_current))}. "
                "Compare runs of the same suite, profile and filters")
    return None


def compare_runs(
    base: LoadedRun,
    current: LoadedRun,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    allow_env_change: bool = False,
    canary_threshold: float = DEFAULT_CANARY_THRESHOLD,
    normalise_drift: bool = False,
    cpu_time: bool = True,
) -> Comparison:
    """`canary_threshold` and `normalise_drift`: see compare.canary; `cpu_time`: see CPU_TIME."""
    if not (0 < canary_threshold < 10):
        raise UserError(f"--canary-threshold {canary_threshold}: use a fraction such as 0.25 (25%)")
    if not (0 < threshold < 10):
        raise UserError(f"--threshold {threshold}: use a fraction such as 0.05 (5%)")
    if not (0 < alpha < 1):
        raise UserError(f"alpha {alpha}: use a probability such as 0.01")
    warnings = [f"base: {w}" for w in base.warnings] + [f"current: {w}" for w in current.warnings]
    for side, run in (("base", base), ("current", current)):
        if run.info.state != "complete":
            warnings.append(f"{side} run {run.info.run_id} is {run.info.state}, not complete")
    b_env, c_env = base.info.environment, current.info.environment
    devices = {("cuda" if r.case.device.startswith("cuda") else "cpu") for r in base.records + current.records}
    env_diffs = {dev: env_differences(b_env, c_env, dev) for dev in sorted(devices)}
    env_diffs = {dev: d for dev, d in env_diffs.items() if d}
    info = informational_differences(b_env, c_env)
    if env_diffs and allow_env_change:
        for dev, diffs in env_diffs.items():
            warnings.append(f"environment changed ({dev}), compared anyway: " + "; ".join(map(str, diffs)))
    for side, env in (("base", b_env), ("current", c_env)):
        reasons = throttle_reasons(env.get("nvml"))
        if reasons:
            warnings.append(f"{side}: NVML reported throttling at the start of the run: {', '.join(reasons)}")

    view, drift_info = _canary_view(base, current, canary_threshold, normalise_drift, warnings)
    view = CanaryView(view.base_usual_s, view.current_usual_s, view.threshold, view.scale, cpu_time)
    b_index, c_index = _index(base, warnings, "base"), _index(current, warnings, "current")
    ids = list(dict.fromkeys([*b_index, *c_index]))
    if b_index and c_index and not set(b_index) & set(c_index):
        warnings.append("no case appears in both runs: were they made from different suites or filters?")
    cases = [
        compare_case(
            case_id,
            b_index.get(case_id),
            c_index.get(case_id),
            threshold=threshold,
            alpha=alpha,
            env_diffs=env_diffs,
            allow_env_change=allow_env_change,
            run_nvml=(b_env.get("nvml"), c_env.get("nvml")),
            canary=view,
        )
        for case_id in ids
    ]
    cases.sort(key=lambda c: (c.state.severity, -abs(math.log(c.ratio)) if c.ratio and c.ratio > 0 and math.isfinite(c.ratio) else 0.0))
    noisy_devices = sorted({"cuda" if c.device.startswith("cuda") else "cpu" for c in cases if c.noise})
    advice = [
        f"{sum(1 for c in cases if c.noise and (c.device.startswith('cuda')) == (dev == 'cuda'))} {dev} case(s) "
        f"too noisy to detect {threshold:.0%}: {noise_advice_for(dev)}"
        for dev in noisy_devices
    ]
    return Comparison(
        base=RunSide.of(base),
        current=RunSide.of(current),
        threshold=threshold,
        alpha=alpha,
        allow_env_change=allow_env_change,
        cases=cases,
        env_differences=env_diffs,
        info_differences=info,
        warnings=warnings,
        geomeans=geometric_means(cases),
        advice=advice,
        canary_threshold=canary_threshold,
        cpu_time=cpu_time,
        drift=drift_info,
    )


def _canary_view(base: LoadedRun, current: LoadedRun, threshold: float, normalise: bool,
                 warnings: list[str]) -> tuple[CanaryView, dict[str, Any]]:
    """Each run's canary, the drift between them (a warning when it is over the canary
    threshold), and the scale that divides it out when asked."""
    b, c = RunCanary.of(base), RunCanary.of(current)
    ratio = drift(b, c)
    info: dict[str, Any] = {"ratio": ratio, "base_canary_s": b.median_s, "current_canary_s": c.median_s,
                            "workload": c.workload or b.workload, "normalised": bool(normalise and ratio)}
    if ratio is None:
        if normalise:
            why = "different canary workloads" if b.workload and c.workload else "no canary in one of the runs"
            warnings.append(f"--normalise-drift: {why}; nothing divided out")
    elif normalise:
        warnings.append(f"machine drift {ratio - 1:+.1%} (canary) divided out of the current times")
    elif max(ratio, 1 / ratio) > 1 + threshold:
        warnings.append(f"the machine was {ratio - 1:+.1%} {'slower' if ratio > 1 else 'faster'} for the current run "
                        "(canary): --normalise-drift divides it out")
    scale = ratio if normalise and ratio else 1.0
    return CanaryView(b.median_s, c.median_s, threshold, scale), info
