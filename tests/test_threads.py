"""torch's CPU thread count: chosen once per run, pinned where it measures, recorded."""

from __future__ import annotations

import torch

from attnbench.measure.threads import choose_threads, pinned_threads
from attnbench.results.store import load_run
from attnbench.runner.run import run_suite
from attnbench.suite import load_suite_text

SUITE = """
name: one_case
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],
           budget: {warmup_seconds: 0, measure_seconds: 0.005, min_repeats: 2, max_repeats: 2}}
sweep: {kernels: [naive], masks: [causal], seqlens: [64]}
"""


def test_choice_of_the_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(None, "cpu").count == 1
    assert choose_threads(3, "cpu") == choose_threads(3, "cuda")
    assert choose_threads(3, "cpu").source == "--threads"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert (choose_threads(None, "cpu").count, choose_threads(None, "cpu").source) == (2, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the default
    assert choose_threads(None, "cpu").count == 1


def test_run_pins_records_and_restores_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    suite = load_suite_text(SUITE, source="one.yaml", cuda_available=False)
    with pinned_threads(2):
        run = load_run(run_suite(suite, tmp_path, isolate=False, threads=3))
        assert torch.get_num_threads() == 2  # restored after the run
        default = load_run(run_suite(suite, tmp_path, isolate=False))
    [record] = run.records
    assert record.timing.threads == 3
    assert run.info.environment["threads"] == {"count": 3, "source": "--threads"}
    assert run.info.environment["cpu"]["torch_threads"] == 3
    assert default.records[0].timing.threads == 1 and default.info.environment["threads"]["count"] == 1
