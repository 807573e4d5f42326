"""Kernels that try to get a false `ok` through the plugin API (tests/plugins/hostile_kernels.py).

An `ok` record must stay true whatever the kernel does: right only on its first call,
changing its inputs in place, hiding the memory it used, or carrying markup in its name.
"""

from __future__ import annotations

import importlib
import json

import pytest

from attnbench.cases import Pass
from attnbench.measure.threads import pinned_threads
from attnbench.measure.timing import SpotCheck, time_fn
from attnbench.results.schema import Status
from attnbench.runner.execute import CaseContext, execute_case
from tests.helpers import TINY_BUDGET, run_cli, small_case

HOSTILE = "tests.plugins.hostile_kernels"
MIB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As a run pins it on CPU (measure.threads): two threads on a loaded machine wait for each other."""
    with pinned_threads(1):
        yield


@pytest.fixture(scope="module")
def hostile():
    remove = importlib.import_module(HOSTILE).registered()
    yield
    remove()  # other tests list the kernels: leave the registry as it was


def new_ctx() -> CaseContext:
    return CaseContext(run_id="test", matmul_tflops={"float32": 0.05}, peak_tflops={"float32": 5.0})


@pytest.mark.parametrize("pass_", list(Pass))
def test_kernel_right_only_on_its_first_call_is_invalid(hostile, pass_):
    record = execute_case(small_case("first_call_only", "causal", pass_=pass_), new_ctx())
    assert record.status is Status.invalid, record.reason
    assert "timed call" in record.reason and "the first call was right" in record.reason
    assert record.accuracy.tensors["dq" if pass_ is Pass.backward else "out"].ok  # the first call passed
    assert not all(t.ok for t in record.accuracy.timed_call.values())
    assert 0 <= record.accuracy.timed_call_index < record.timing.repeats


def test_honest_kernel_has_its_timed_call_checked_too(hostile):
    record = execute_case(small_case("naive", "causal", pass_=Pass.backward), new_ctx())
    assert record.status is Status.ok, record.reason
    assert set(record.accuracy.timed_call) == {"dq", "dk", "dv"} and record.accuracy.ok


def test_spot_check_picks_a_random_timed_iteration():
    chosen = set()
    for _ in range(30):
        spot = SpotCheck()
        calls = []
        samples = time_fn(lambda: calls.append(1) or len(calls), device="cpu", budget=TINY_BUDGET, spot_check=spot)
        assert 0 <= spot.index < samples.repeats
        # the kept result is the one that timed iteration returned (calls before the timed loop counted)
        assert spot.result == len(calls) - samples.repeats + spot.index + 1
        chosen.add(spot.index)
    assert len(chosen) > 1


@pytest.mark.parametrize("kernel, pass_, tensor", [("mutates_q", Pass.forward, "q"),
                                                   ("mutates_grad_out", Pass.backward, "grad_out")])
def test_input_mutation_is_invalid_and_never_reaches_the_next_kernel(hostile, kernel, pass_, tensor):
    ctx = new_ctx()  # the mutator runs first on these inputs: the reference must still be right
    cheat = execute_case(small_case(kernel, "causal", pass_=pass_), ctx)
    assert cheat.status is Status.invalid and f"changed its inputs in place ({tensor})" in cheat.reason
    honest = execute_case(small_case("naive", "causal", pass_=pass_), ctx)
    assert honest.status is Status.ok, honest.reason
    again = execute_case(small_case("sdpa", "causal", pass_=pass_), ctx)
    assert again.status is Status.ok, again.reason


HOSTILE_SUITE = """
name: hostile
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],
           budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 3, max_repeats: 5}}
sweep:
  kernels: [mutates_q, naive, first_call_only, hides_memory, holds_memory_from_prepare, "[/]adv"]
  masks: [causal]
  seqlens: [256]
"""


def test_hostile_kernels_in_the_worker_through_the_cli(tmp_path):
    """The real path: plugins by ATTNBENCH_PLUGINS, cases in the worker, memory watched by the main process."""
    suite = tmp_path / "hostile.yaml"
    suite.write_text(HOSTILE_SUITE)
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), env={"ATTNBENCH_PLUGINS": HOSTILE})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    [run_dir] = list((tmp_path / "out").iterdir())
    records = {r["case"]["kernel"]: r for r in map(json.loads, (run_dir / "records.jsonl").read_text().splitlines())}
    assert {k: r["status"] for k, r in records.items()} == {
        "mutates_q": "invalid", "naive": "ok", "first_call_only": "invalid", "hides_memory": "invalid",
        "holds_memory_from_prepare": "ok", "[/]adv": "ok",
    }
    assert "changed its inputs in place (q)" in records["mutates_q"]["reason"]
    assert "timed call" in records["first_call_only"]["reason"]
    faker = records["hides_memory"]
    assert "high-water mark" in faker["reason"] and faker["memory"]["peak_bytes"] >= 200 * MIB
    assert faker["memory"]["watched_by"] == "the main process"
    holder = records["holds_memory_from_prepare"]["memory"]
    assert holder["peak_bytes"] >= 200 * MIB and holder["held_bytes"] >= 200 * MIB
    assert records["naive"]["memory"]["peak_bytes"] < 64 * MIB
    pinned = json.loads((run_dir / "run.json").read_text())["environment"]["threads"]
    assert records["naive"]["timing"]["threads"] == pinned["count"]  # the worker uses the run's pinned count
    # the markup kernel name is printed as written, in the tables and the summary
    assert "[/]adv" in result.stdout
    shown = run_cli("show", str(run_dir))
    assert shown.returncode == 0 and "[/]adv" in shown.stdout and "Traceback" not in shown.stderr
