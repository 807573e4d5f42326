"""The runner: one record per case, with the right status, whatever the kernel does."""

from __future__ import annotations

import importlib
import json

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


def test_above_device_peak_is_invalid(ctx):
    ctx.peak_tflops["float32"] = 1e-9
    record = execute_case(small_case("sdpa", "causal"), ctx)
    assert record.status is Status.invalid
    assert "above this device's peak" in record.reason


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
