"""Measuring in rounds (runner.rounds), the canary around every visit, and `compare --confirm`."""

from __future__ import annotations

import json

import pytest

from attnbench.results.schema import RunInfo
from attnbench.results.store import VISITS_FILE, RunWriter, load_run, read_records
from attnbench.runner.run import RunEvents, RunInterrupted, run_suite
from attnbench.suite import load_suite_text
from tests.helpers import run_cli

SUITE = """
name: rounds
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],
           budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 6, max_repeats: 6, rounds: 3}}
sweep:
  kernels: [naive, sdpa]
  masks: [causal]
  seqlens: [64]
"""


def _suite():
    return load_suite_text(SUITE, source="rounds.yaml", cuda_available=False)


def _visit_order(run_dir):
    visits, _ = read_records(run_dir / VISITS_FILE)
    return [(v.case.kernel, v.timing.rounds[0].round) for v in visits]


def test_each_case_is_visited_once_a_round_in_suite_order_with_its_samples_and_canary_per_round(tmp_path):
    run_dir = run_suite(_suite(), tmp_path, isolate=False)
    assert _visit_order(run_dir) == [("naive", 0), ("sdpa", 0), ("naive", 1), ("sdpa", 1), ("naive", 2), ("sdpa", 2)]
    run = load_run(run_dir)
    assert [r.status.value for r in run.records] == ["ok", "ok"]
    for record in run.records:
        timing = record.timing
        assert timing.rounds_planned == 3 and [r.round for r in timing.rounds] == [0, 1, 2]
        assert timing.samples_s == [s for r in timing.rounds for s in r.samples_s] and timing.repeats == 6
        assert all(len(r.canary_before_s) == 5 and len(r.canary_after_s) == 5 for r in timing.rounds)
        offsets = [r.offset_s for r in timing.rounds]
        assert offsets == sorted(offsets)
        # every visit checked one of its own timed calls against the reference
        assert [c.round for c in record.accuracy.timed_calls] == [0, 1, 2] and record.accuracy.ok
    canary = run.info.canary
    assert canary["workload"]["name"] and canary["samples"] == 2 * 3 * 10 and canary["median_s"] > 0


def test_a_run_stopped_between_rounds_keeps_what_it_measured_and_resume_runs_only_the_missing_rounds(tmp_path):
    seen = []

    def stop_after_three(index, visit, record):
        seen.append((index, visit.round))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as stopped:
        run_suite(_suite(), tmp_path, RunEvents(on_visit=stop_after_three), isolate=False)
    run_dir = stopped.value.run_dir
    run = load_run(run_dir)
    assert run.info.state == "interrupted"
    rounds = {r.case.kernel: len(r.timing.rounds) for r in run.records}
    assert rounds == {"naive": 2, "sdpa": 1}
    assert all("of 3 rounds" in r.reason for r in run.records)

    run_suite(_suite(), tmp_path, isolate=False, resume=run_dir)
    assert _visit_order(run_dir)[3:] == [("sdpa", 1), ("naive", 2), ("sdpa", 2)]  # only what was missing
    run = load_run(run_dir)
    assert run.info.state == "complete" and len(run.records) == 2
    for record in run.records:
        assert [r.round for r in record.timing.rounds] == [0, 1, 2] and record.reason is None


def _scaled_copy(run, root, factor_by_kernel: dict[str, float], tag: str):
    """A run directory like `run` whose samples of the given kernels are multiplied (a made-up change)."""
    info = RunInfo(**{**run.info.model_dump(), "run_id": f"{run.info.run_id}-{tag}"})
    writer = RunWriter(root, info)
    for record in run.records:
        f = factor_by_kernel.get(record.case.kernel, 1.0)
        timing = record.timing
        rounds = [r.model_copy(update={"samples_s": [s * f for s in r.samples_s],
                                       "cpu_samples_s": [s * f for s in r.cpu_samples_s]}) for r in timing.rounds]
        timing = timing.model_copy(update={"rounds": rounds, "samples_s": [s * f for s in timing.samples_s],
                                           "cpu_samples_s": [s * f for s in timing.cpu_samples_s],
                                           "median_s": timing.median_s * f, "p20_s": timing.p20_s * f,
                                           "p80_s": timing.p80_s * f})
        writer.append(record.model_copy(update={"timing": timing}))
    writer.finish("complete")
    return writer.dir


SLOW_SDPA = {"ATTNBENCH_PLUGINS": "tests.plugins.slow_kernel", "ATTNBENCH_TEST_SLOW_KERNEL": "sdpa",
             "ATTNBENCH_TEST_SLOW_FACTOR": "4.0"}  # sdpa's calls take 5x their CPU time


def test_confirm_keeps_only_the_change_that_reproduces(tmp_path):
    from attnbench.compare import State, compare_runs
    from attnbench.runner.confirm import confirm

    measured = load_run(run_suite(_suite(), tmp_path / "real", isolate=False))
    # both current records made 20x slower: a change the code does not have (a disturbance) ...
    base = load_run(_scaled_copy(measured, tmp_path / "runs", {}, "base"))
    current = load_run(_scaled_copy(measured, tmp_path / "runs", {"naive": 20.0, "sdpa": 20.0}, "current"))
    cmp = compare_runs(base, current)
    assert {c.group: c.state for c in cmp.cases} == {"naive": State.regressed, "sdpa": State.regressed}
    # ... measured again now, by the same code: neither reproduces, and the gate passes
    confirm(cmp, base, current, rounds=2)
    # (unchanged, or noisy where the machine moved while measuring again: neither fails the gate)
    assert all(c.state in (State.unchanged, State.noisy) and c.confirm.startswith("--confirm") for c in cmp.cases)
    assert all("did not reproduce" in c.confirm for c in cmp.cases if c.state is State.unchanged)
    assert cmp.exit_code() == 0
    again = load_run(cmp.confirmed["run"])
    assert all(len(r.timing.rounds) == 2 for r in again.records)  # measured now, in rounds

    # the current code with sdpa really 5x slower (a plugin), the base's code path (the plugin's
    # slowdown switched off) measured side by side: only sdpa stays regressed, exit 1
    too_few = run_cli("compare", str(base.path), str(current.path), "--confirm", "--confirm-rounds", "2",
                      "--base-env", "ATTNBENCH_TEST_SLOW_FACTOR", env=SLOW_SDPA)
    assert too_few.returncode == 2 and "at least 5 rounds" in too_few.stderr, too_few.stderr  # p = 1/4: no verdict
    # 7 rounds: the unchanged naive case is called regressed by chance with p = 1/128 (all 7 slower),
    # not the 1/32 of 5 rounds (its per-round ratios spread 0.55-1.43 here: 0.13 ms calls)
    result = run_cli("compare", str(base.path), str(current.path), "--format", "json", "--confirm",
                     "--confirm-rounds", "7", "--base-env", "ATTNBENCH_TEST_SLOW_FACTOR", env=SLOW_SDPA)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    states = {c["key"]["kernel"]: (c["state"], c["confirm"]) for c in data["cases"]}
    assert states["naive"][0] == "unchanged" and "did not reproduce" in states["naive"][1]
    assert states["sdpa"][0] == "regressed" and "reproduced" in states["sdpa"][1]
    assert data["confirmed"]["reproduced"] == 1 and "side by side" in data["confirmed"]["how"]
    sides = {load_run(data["confirmed"][k]).info.environment["side"]["name"] for k in ("base_run", "run")}
    assert sides == {"base", "current"}
