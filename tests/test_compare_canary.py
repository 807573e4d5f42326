"""compare and the canary (compare.canary): disturbed rounds left out, noisy cases, machine drift.

Synthetic records with rounds and canary samples chosen; no kernel runs."""

from __future__ import annotations

import numpy as np

from attnbench.compare import State, compare_runs
from attnbench.results.schema import RoundTiming
from tests.synthetic_runs import Spec, case, make_run, noisy_samples, record_for

CANARY = {"workload": {"name": "matmul-96x8-float32"}}


def _rounded(run, canaries: dict[str, list[float]], rng, usual: float):
    """`run` with each record's samples split into rounds, round i's canary around `canaries[label][i]`."""
    records = []
    for record in run.records:
        levels = canaries.get(record.case.label(), [usual] * 4)
        chunks = np.array_split(np.asarray(record.timing.samples_s), len(levels))
        rounds = [RoundTiming(round=i, warmup=1, samples_s=[float(x) for x in chunk],
                              canary_before_s=noisy_samples(level, 5, 0.01, rng),
                              canary_after_s=noisy_samples(level, 5, 0.01, rng))
                  for i, (chunk, level) in enumerate(zip(chunks, levels))]
        timing = record.timing.model_copy(update={"rounds": rounds, "rounds_planned": len(rounds)})
        records.append(record.model_copy(update={"timing": timing}))
    run.records[:] = records
    run.info.canary = {**CANARY, "median_s": usual}
    return run


def _pair(base_median, current_median, *, base_canary, current_canary, base_usual=1e-4, current_usual=1e-4,
          seed=0, kernel="flex"):
    rng = np.random.default_rng(seed)
    c = case(kernel=kernel, device="cpu")
    label = c.label()
    base = make_run([Spec(c, samples=noisy_samples(base_median, 20, 0.02, rng))])
    current = make_run([Spec(c, samples=noisy_samples(current_median, 20, 0.02, rng))])
    return (_rounded(base, {label: base_canary}, rng, base_usual),
            _rounded(current, {label: current_canary}, rng, current_usual))


def test_a_slowdown_measured_while_the_canary_was_slow_too_is_noisy_not_regressed():
    usual = [1e-4] * 4
    base, current = _pair(1e-3, 1.4e-3, base_canary=usual, current_canary=[1.4e-4] * 4)
    # the run as a whole was as usual (its usual canary 1e-4): the case's canary moved +40%
    [c] = compare_runs(base, current).cases
    assert c.state is State.noisy and "canary" in c.reason and abs(c.canary_ratio - 1.4) < 0.05
    assert compare_runs(base, current).exit_code() == 0
    # the same slowdown with a quiet canary is a regression
    base, current = _pair(1e-3, 1.4e-3, base_canary=usual, current_canary=usual)
    [c] = compare_runs(base, current).cases
    assert c.state is State.regressed and c.canary_ratio is not None


def test_a_disturbed_round_is_left_out_and_the_rest_decide():
    # rounds 2 to 4 of the current run: the canary 3x slower and the samples 100x slower (another job)
    rng = np.random.default_rng(1)
    c = case(kernel="flex", device="cpu")
    base = make_run([Spec(c, samples=noisy_samples(1e-3, 20, 0.02, rng))])
    samples = noisy_samples(1e-3, 20, 0.02, rng)
    samples[5:] = [s * 100 for s in samples[5:]]
    current = make_run([Spec(c, samples=samples)])
    usual = [1e-4] * 4
    base = _rounded(base, {c.label(): usual}, rng, 1e-4)
    plain = compare_runs(base, _rounded(make_run([Spec(c, samples=samples)]), {c.label(): usual}, rng, 1e-4))
    # without the canary's word, 15 of 20 samples 100x flag the case
    assert plain.cases[0].state in (State.regressed, State.noisy) and plain.cases[0].change > 10
    current = _rounded(current, {c.label(): [1e-4, 3e-4, 3e-4, 3e-4]}, rng, 1e-4)
    [cc] = compare_runs(base, current).cases
    assert cc.state is State.unchanged and cc.disturbed_rounds["current"] == "3/4" and cc.current.n == 5


def test_every_round_disturbed_makes_a_change_noisy():
    base, current = _pair(1e-3, 2e-3, base_canary=[1e-4] * 4, current_canary=[2e-4] * 4, current_usual=1e-4)
    [c] = compare_runs(base, current).cases
    assert c.state is State.noisy and "every round" in c.reason


def test_machine_drift_is_reported_and_normalised_away_on_request():
    # the whole current run 30% slower, the canary with it: drift, not a change of the code
    base, current = _pair(1e-3, 1.3e-3, base_canary=[1e-4] * 4, current_canary=[1.3e-4] * 4,
                          current_usual=1.3e-4)
    plain = compare_runs(base, current)
    assert abs(plain.drift["ratio"] - 1.3) < 0.01 and not plain.drift["normalised"]
    assert any("+30.0% slower" in w and "--normalise-drift" in w for w in plain.warnings)
    assert plain.cases[0].state is State.noisy  # the canary around it moved 30%
    normalised = compare_runs(base, current, normalise_drift=True)
    assert normalised.drift["normalised"] and normalised.cases[0].state is State.unchanged
    assert abs(normalised.cases[0].ratio - 1.0) < 0.05
    # a real 40% slowdown on top of the drift is still found
    base, current = _pair(1e-3, 1.3 * 1.4e-3, base_canary=[1e-4] * 4, current_canary=[1.3e-4] * 4,
                          current_usual=1.3e-4, seed=3)
    assert compare_runs(base, current, normalise_drift=True).cases[0].state is State.regressed


def test_different_canary_workloads_give_no_drift():
    base, current = _pair(1e-3, 1e-3, base_canary=[1e-4] * 4, current_canary=[1e-4] * 4)
    current.info.canary = {**current.info.canary, "workload": {"name": "matmul-4096x4-bfloat16"}}
    cmp = compare_runs(base, current, normalise_drift=True)
    assert cmp.drift["ratio"] is None and any("different canary workloads" in w for w in cmp.warnings)


def test_records_without_rounds_compare_as_before():
    rng = np.random.default_rng(2)
    c = case(kernel="flex", device="cpu")
    base = make_run([Spec(c, samples=noisy_samples(1e-3, 20, 0.02, rng))])
    current = make_run([Spec(c, samples=noisy_samples(1.3e-3, 20, 0.02, rng))])
    [cc] = compare_runs(base, current).cases
    assert cc.state is State.regressed and cc.canary_ratio is None and cc.disturbed_rounds == {}
    assert record_for("x", Spec(c, samples=[1.0])).timing.rounds is None


def test_a_significant_change_within_what_the_samples_resolve_is_noisy():
    # samples spread evenly over 1..3 ms: the faster halves' p80/p20 spread is 50%, with 30 of
    # them a side they resolve ~27%; a 20% shift is significant to the rank test but no larger
    c = case(kernel="flex", device="cpu")
    spread = list(np.linspace(1e-3, 3e-3, 60))
    base = make_run([Spec(c, samples=spread)])
    [small] = compare_runs(base, make_run([Spec(c, samples=[s * 1.2 for s in spread])])).cases
    assert small.significant and small.state is State.noisy and "resolve ~27%" in small.reason
    [large] = compare_runs(base, make_run([Spec(c, samples=[s * 1.5 for s in spread])])).cases
    assert large.state is State.regressed and abs(large.ratio - 1.5) < 1e-9


def test_the_share_of_preempted_samples_does_not_decide_the_faster_half_does():
    # a 1 ms kernel; 30% of the base's samples and 70% of the current's preempted (+10 ms)
    rng = np.random.default_rng(4)
    c = case(kernel="flex", device="cpu")

    def samples(preempted: int):
        clean = noisy_samples(1e-3, 60, 0.02, rng)
        return [s + (10e-3 if i < preempted else 0.0) for i, s in enumerate(clean)]

    base, current = make_run([Spec(c, samples=samples(18))]), make_run([Spec(c, samples=samples(42))])
    [cc] = compare_runs(base, current).cases
    assert cc.state is State.unchanged and abs(cc.ratio - 1) < 0.05
    assert cc.current.median_s > 5 * cc.base.median_s  # what a comparison of medians would have called


def test_one_thread_cpu_cases_compare_on_thread_cpu_time_unless_asked_for_wall_time():
    rng = np.random.default_rng(5)
    c = case(kernel="flex", device="cpu")
    cpu = noisy_samples(1e-3, 20, 0.02, rng)

    def run(wall_factor):
        made = make_run([Spec(c, samples=[s * wall_factor for s in cpu])])
        t = made.records[0].timing.model_copy(update={"cpu_samples_s": list(cpu), "threads": 1})
        made.records[0] = made.records[0].model_copy(update={"timing": t})
        return made

    base, current = run(1.0), run(2.0)  # waited twice as long for a core, did the same work
    [on_cpu] = compare_runs(base, current).cases
    assert on_cpu.timer == "thread cpu" and on_cpu.state is State.unchanged
    [on_wall] = compare_runs(base, current, cpu_time=False).cases
    assert on_wall.timer == "wall" and on_wall.state is State.regressed


def test_paired_rounds_confirm_only_a_change_every_round_shows():
    from attnbench.compare.paired import confirmed_direction, paired_rounds

    c = case(kernel="flex", device="cpu")
    rng = np.random.default_rng(6)

    def rounded(per_round: list[float]):
        run = make_run([Spec(c, samples=[m for m in per_round for _ in range(6)])])
        rounds = [RoundTiming(round=i, warmup=1, samples_s=noisy_samples(m, 6, 0.01, rng)) for i, m in enumerate(per_round)]
        t = run.records[0].timing.model_copy(update={"rounds": rounds, "rounds_planned": len(rounds)})
        return run.records[0].model_copy(update={"timing": t})

    base = rounded([1e-3, 2e-3, 1e-3, 3e-3, 1e-3])  # the machine moves from round to round ...
    slower = rounded([1.3e-3, 2.6e-3, 1.3e-3, 3.9e-3, 1.3e-3])  # ... a real +30% moves with it
    pairs = paired_rounds(base, slower)
    assert pairs.rounds == 5 and pairs.slower == 5 and confirmed_direction(pairs, 0.05) == "slower"
    mixed = rounded([1.3e-3, 2.6e-3, 0.9e-3, 3.9e-3, 1.3e-3])  # one round the other way: not confirmed
    assert confirmed_direction(paired_rounds(base, mixed), 0.05) is None
    small = rounded([1.03e-3, 2.06e-3, 1.03e-3, 3.09e-3, 1.03e-3])  # every round, but within the threshold
    assert confirmed_direction(paired_rounds(base, small), 0.05) is None
    # 4 of 4 rounds one way happen by chance with p = 1/16: too few rounds for a verdict
    four = paired_rounds(rounded([1e-3, 2e-3, 1e-3, 3e-3]), rounded([1.3e-3, 2.6e-3, 1.3e-3, 3.9e-3]))
    assert four.rounds == 4 and four.slower == 4 and confirmed_direction(four, 0.05) is None
