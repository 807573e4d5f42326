"""The runner: one record per case, with the right status, whatever the kernel does."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch

from attnbench.cases import Budget, Pass
from attnbench.results.schema import Status
from attnbench.results.store import load_run
from attnbench.runner.execute import CaseContext, execute_case
from attnbench.suite import load_suite_text
from tests.helpers import run_cli, small_case


@pytest.fixture(scope="module")
def faulty():
    module = importlib.import_module("tests.plugins.faulty_kernels")
    importlib.import_module("tests.plugins.wrong_kernel")
    yield module


@pytest.fixture()
def ctx():
    return CaseContext(run_id="test", matmul_tflops={"float32": 0.05}, peak_tflops={"float32": 5.0})


def test_ok_record_has_numbers_samples_memory_accuracy(ctx):
    record = execute_case(small_case("naive", "causal_document", pass_=Pass.backward), ctx)
    assert record.status is Status.ok, record.reason
    assert record.timing.repeats == len(record.timing.samples_s) >= 2
    assert record.timing.p20_s <= record.timing.median_s <= record.timing.p80_s
    assert record.tflops > 0 and record.flops > 0
    assert record.memory.method == "linux_vmhwm_rss_sampled"
    assert record.timing.threads == torch.get_num_threads()
    assert set(record.accuracy.tensors) == {"out", "lse", "dq", "dk", "dv"}
    assert record.mask["num_documents"] >= 1 and record.mask["slices_hash"]
    # backward FLOPs are 2.5x forward by the convention
    forward = execute_case(small_case("naive", "causal_document", pass_=Pass.forward), ctx)
    assert record.flops == pytest.approx(2.5 * forward.flops)


def test_unsupported_is_recorded_not_run(ctx):
    record = execute_case(small_case("flex", pass_=Pass.backward), ctx)
    assert record.status is Status.unsupported
    assert "no backward on CPU" in record.reason
    assert record.timing is None and record.tflops is None


def test_predicted_over_budget_is_skipped_with_prediction(ctx):
    case = small_case("naive", seqlen=2048).model_copy(update={"budget": Budget(case_seconds=0.001)})
    record = execute_case(case, ctx)
    assert record.status is Status.skipped
    assert "over the case budget" in record.reason
    assert record.prediction.case_seconds > 0.001
    assert record.timing is None


@pytest.mark.parametrize(
    "kernel, status, words",
    [
        ("raises", Status.error, "RuntimeError: kernel exploded"),
        ("out_of_memory", Status.oom, "out of memory"),
        ("returns_nan", Status.invalid, "NaN"),
        ("wrong_scale", Status.invalid, "relative L2 error"),
        ("refuses_at_run_time", Status.unsupported, "multiple of 64"),
    ],
)
def test_failing_kernels_get_exact_statuses(faulty, ctx, kernel, status, words):
    record = execute_case(small_case(kernel, "causal"), ctx)
    assert record.status is status, record.reason
    assert words in record.reason
    assert "\n" not in record.reason


def test_above_device_peak_is_invalid(ctx, monkeypatch):
    import attnbench.measure.device as device

    measured_again = []
    monkeypatch.setattr(device, "remeasured_peak", lambda dev, dtype: measured_again.append(dtype) or 2e-9)
    # only float32's own peak judges a float32 case: a huge bf16 peak does not excuse it
    ctx.peak_tflops.update(float32=1e-9, bfloat16=1e9, float16=1e9)
    record = execute_case(small_case("sdpa", "causal"), ctx)
    assert record.status is Status.invalid and measured_again == ["float32"]
    assert "above this device's float32 peak of 2e-09" in record.reason  # the higher of the two


def test_a_calibration_from_a_busy_moment_is_measured_again_before_calling_a_case_impossible(ctx, monkeypatch):
    import attnbench.measure.device as device

    monkeypatch.setattr(device, "remeasured_peak", lambda dev, dtype: 1e9)  # the machine was busy at first
    ctx.peak_tflops["float32"] = 1e-9
    record = execute_case(small_case("sdpa", "causal"), ctx)
    assert record.status is Status.ok, record.reason
    assert ctx.peak_tflops["float32"] == 1e9  # kept for the rest of the run


SUITE = """
name: mixed
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],
           budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 2, max_repeats: 3}}
sweep:
  kernels: [naive, raises, wrong_scale, sdpa]
  masks: [causal, full_document]
  seqlens: [64]
"""


def test_failing_case_never_loses_earlier_results(faulty, tmp_path, monkeypatch):
    from attnbench.runner.run import run_suite

    # the worker process loads the same plugins
    monkeypatch.setenv("ATTNBENCH_PLUGINS", "tests.plugins.faulty_kernels,tests.plugins.wrong_kernel")
    suite = load_suite_text(SUITE, source="mixed.yaml", cuda_available=False)
    run_dir = run_suite(suite, tmp_path)
    run = load_run(run_dir)
    statuses = [(r.case.kernel, r.status.value) for r in run.records]
    assert statuses == [
        ("naive", "ok"), ("raises", "error"), ("wrong_scale", "invalid"), ("sdpa", "ok"),
    ] * 2
    assert run.info.state == "complete" and run.info.status_counts == {"ok": 4, "error": 2, "invalid": 2}
    assert (run_dir / "tables.md").read_text().count("invalid") >= 2
    assert (run_dir / "summary.csv").exists()


def test_wrong_plugin_kernel_marked_invalid_through_the_cli(tmp_path):
    """The deliberately wrong kernel, registered only through ATTNBENCH_PLUGINS."""
    suite = tmp_path / "wrong.yaml"
    suite.write_text(SUITE.replace("[naive, raises, wrong_scale, sdpa]", "[naive, wrong_scale]"))
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), env={"ATTNBENCH_PLUGINS": "tests.plugins.wrong_kernel"})
    assert result.returncode == 0, result.stderr
    [run_dir] = list((tmp_path / "out").iterdir())
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    by_kernel = {(r["case"]["kernel"], r["case"]["mask"]["name"]): r for r in records}
    assert by_kernel[("wrong_scale", "causal")]["status"] == "invalid"
    assert by_kernel[("naive", "causal")]["status"] == "ok"
    assert "invalid" in result.stdout


# -- predictions and the ETA -----------------------------------------------------------------
def test_predictions_count_compilation_reference_and_start_up_once_each():
    from attnbench.kernels import KERNELS
    from attnbench.masks import build_mask
    from attnbench.measure.predict import WORKER_START_S, case_cost, sequence_seconds, startup_seconds

    rates = {"float32": 0.1}
    flex = [small_case("flex", mask, seqlen=256) for mask in ("causal", "causal", "full")]
    costs = [case_cost(c, KERNELS.get("flex"), build_mask(c.mask.name, 256), rates) for c in flex]
    seconds = sequence_seconds(flex, costs)
    compile_s = KERNELS.get("flex").compile_seconds["cpu"]
    assert compile_s > 0 and costs[0].compile == compile_s
    start_s = KERNELS.get("flex").compiler_start_seconds["cpu"]
    # the first case also starts the compiler; the second causal case reuses the first's graph
    # and reference; the full mask compiles again, with the compiler already started
    assert seconds[0] == pytest.approx(costs[0].total + start_s) and start_s > 0
    assert seconds[1] == pytest.approx(costs[1].total - compile_s - costs[1].reference)
    assert seconds[2] == pytest.approx(costs[2].total)
    assert startup_seconds(flex) == WORKER_START_S["cpu"] and startup_seconds([]) == 0.0
    assert sequence_seconds(flex[:1], [None]) == [0.0]  # not attempted: nothing


def test_eta_corrects_the_prediction_by_what_finished_cases_took():
    from attnbench.runner.eta import Eta

    eta = Eta([10.0] * 10)
    assert eta.remaining_seconds() == pytest.approx(100.0)
    for i in range(5):  # every case takes twice its prediction
        eta.finished(i, 20.0)
    prior = 0.05 * 100
    assert eta.correction == pytest.approx((prior + 100) / (prior + 50))
    assert eta.remaining_seconds() == pytest.approx(50 * (prior + 100) / (prior + 50))
    eta.finished(4, 1000.0)  # a case counts once
    assert eta.remaining_seconds() == pytest.approx(50 * (prior + 100) / (prior + 50))


def test_validate_groups_repeated_reasons_with_counts_and_a_range():
    from attnbench.cli.screens import not_run_groups
    from attnbench.runner.plan import plan_case
    from attnbench.suite import load_suite
    from tests.helpers import ROOT

    suite = load_suite(ROOT / "suites" / "longctx.yaml", profile="none", cuda_available=False)
    plan = [plan_case(c, {"float32": 0.1, "float16": 0.1, "bfloat16": 1.0}) for c in suite.cases]
    rows = not_run_groups(plan)
    skipped = [p for p in plan if p.action == "skipped"]
    assert len(skipped) > 100 and len(rows) <= 12  # one row per kernel and reason, not one per case
    assert sum(n for _, n, _ in rows) == sum(p.action != "run" for p in plan)
    budget = [reason for _, _, reason in rows if "over the case budget of 300 s" in reason]
    assert budget and all(re.match(r"predicted \d+-\d+ s, over", reason) for reason in budget)
