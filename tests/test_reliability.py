"""Fault injection: crashing, hanging, OOM, NaN and wrong kernels; kill -9 and resume; Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from attnbench.results.schema import Status
from attnbench.results.store import load_run
from attnbench.runner.worker import death_status
from tests.helpers import ROOT, run_cli

FAULTY = "tests.plugins.faulty_kernels,tests.plugins.wrong_kernel"

FAULT_SUITE = """\
name: faults
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],
           budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 2, max_repeats: 3, timeout_seconds: 60}}
sweep:
  kernels: [naive, segfaults, sdpa, hangs, aborts, out_of_memory, returns_nan, wrong_scale, sdpa_math]
  masks: [causal]
  seqlens: [64]
"""


def records_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def test_faulty_kernels_get_exact_statuses_and_healthy_ones_are_unaffected(tmp_path):
    suite = tmp_path / "faults.yaml"
    suite.write_text(FAULT_SUITE)
    started = time.monotonic()
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--timeout", "8",
                     env={"ATTNBENCH_PLUGINS": FAULTY}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 200
    [run_dir] = list((tmp_path / "out").iterdir())
    by_kernel = {r["case"]["kernel"]: r for r in records_of(run_dir)}
    expected = {
        "naive": "ok", "sdpa": "ok", "sdpa_math": "ok",
        "segfaults": "error", "aborts": "error", "hangs": "timeout",
        "out_of_memory": "oom", "returns_nan": "invalid", "wrong_scale": "invalid",
    }
    assert {k: r["status"] for k, r in by_kernel.items()} == expected
    assert "SIGSEGV" in by_kernel["segfaults"]["reason"]
    assert "Segmentation fault" in by_kernel["segfaults"]["detail"]  # the worker's stderr tail
    assert "SIGABRT" in by_kernel["aborts"]["reason"]
    assert "8 s" in by_kernel["hangs"]["reason"]
    for healthy in ("naive", "sdpa", "sdpa_math"):
        record = by_kernel[healthy]
        assert record["timing"]["repeats"] >= 2 and record["accuracy"]["ok"] and record["tflops"] > 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "complete"
    # the worker was replaced after each fatal case and after the OOM, and said what it started with
    replaced = [n for n in info["notes"] if n.startswith("worker replaced")]
    assert len(replaced) == 4 and any("(oom)" in n and "0 bytes allocated" in n for n in replaced)


def test_host_oom_kill_is_told_apart_from_other_kills():
    assert death_status(-signal.SIGKILL, 3, 4) == (Status.oom, death_status(-9, 0, 1)[1])
    assert death_status(-signal.SIGKILL, 3, 3)[0] is Status.error
    assert "SIGKILL" in death_status(-signal.SIGKILL, None, None)[1]
    assert death_status(-signal.SIGSEGV, 0, 0) == (Status.error, "worker killed by SIGSEGV")
    assert "code 3" in death_status(3, None, None)[1]


QUICK_SUITE = """\
name: quick
defaults: {batch: 1, heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward, backward],
           budget: {warmup_seconds: 0, measure_seconds: 0.2, min_repeats: 3, max_repeats: 5}}
sweep:
  kernels: [naive, sdpa, sdpa_math]
  masks: [full, causal, causal_document, sliding_window_causal]
  seqlens: [64]
"""


def start_run(suite: Path, out: Path, token: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ATTNBENCH_TEST_TOKEN=token)
    return subprocess.Popen([sys.executable, "-m", "attnbench", "run", str(suite), "--out", str(out), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_records(out: Path, count: int, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in out.glob("*"):
            path = run_dir / "records.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= count:
                return run_dir
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def processes_with_token(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"ATTNBENCH_TEST_TOKEN={token}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_kill_9_mid_suite_then_resume_completes_without_duplicates(tmp_path):
    suite = tmp_path / "quick.yaml"
    suite.write_text(QUICK_SUITE)
    out = tmp_path / "out"
    token = f"kill9-{os.getpid()}"
    process = start_run(suite, out, token)
    run_dir = wait_for_records(out, 5)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    deadline = time.monotonic() + 10
    while processes_with_token(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with_token(token) == []  # the worker died with the main process
    before = load_run(run_dir)
    assert before.info.state == "running" and 5 <= len(before.records) < 24
    # a torn last line, as a kill during a write would leave
    with open(run_dir / "records.jsonl", "a") as handle:
        handle.write('{"schema_version": 1, "run_id": "x", "cas')
    resumed = run_cli("run", str(suite), "--out", str(out), "--resume", run_dir.name, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = load_run(run_dir)
    assert after.warnings == []  # the torn line was cut before appending
    ids = [r.case_id for r in after.records]
    assert len(ids) == len(set(ids)) == 24
    assert after.info.state == "complete" and len(after.info.resumed_at) == 1
    assert [r.case_id for r in after.records[: len(before.records)]] == [r.case_id for r in before.records]


def test_resume_with_another_suite_is_refused(tmp_path):
    suite = tmp_path / "quick.yaml"
    suite.write_text(QUICK_SUITE.replace("[full, causal, causal_document, sliding_window_causal]", "[causal]"))
    first = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--kernels", "naive")
    assert first.returncode == 0, first.stderr
    [run_dir] = list((tmp_path / "out").iterdir())
    other = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--resume", run_dir.name)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    # the suite is the same: the refusal names what differs, the missing --kernels filter
    assert "--kernels: ['naive'] in the run, none now" in other.stderr, other.stderr


def test_a_refused_resume_names_each_difference():
    from attnbench.results.schema import SuiteInfo
    from attnbench.runner.resume import resume_refusal
    from attnbench.suite import load_suite_text

    text = QUICK_SUITE.replace("[full, causal, causal_document, sliding_window_causal]", "[causal]")
    then = load_suite_text(text, source="quick.yaml", cuda_available=False)
    recorded = SuiteInfo(name=then.name, profile=then.profile, sha256=then.sha256, document=then.resolved,
                         filters=then.filters)
    assert resume_refusal(recorded, then) is None
    now = load_suite_text(text.replace("min_repeats: 3", "min_repeats: 5").replace("seqlens: [64]", "seqlens: [64, 128]"),
                          source="quick.yaml", cuda_available=False)
    refusal = resume_refusal(recorded, now)
    assert "defaults.budget.min_repeats: 3 in the run, 5 now" in refusal
    assert "sweep.seqlens: [64] in the run, [64, 128] now" in refusal


def test_the_resume_command_is_the_command_with_resume_replaced():
    from attnbench.cli.app import resume_command_line

    argv = ["run", "my suite.yaml", "--kernels", "naive", "--resume", "old", "--out", "res"]
    assert resume_command_line(argv, Path("res/run-1")) == (
        "attnbench run 'my suite.yaml' --kernels naive --out res --resume res/run-1")
    assert resume_command_line(["run", "s.yaml", "--resume=latest"], Path("r")) == "attnbench run s.yaml --resume r"


def test_ctrl_c_finishes_the_current_record_and_exits_130(tmp_path):
    suite = tmp_path / "quick.yaml"
    suite.write_text(QUICK_SUITE)
    out = tmp_path / "out"
    process = start_run(suite, out, f"sigint-{os.getpid()}")
    run_dir = wait_for_records(out, 3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    run = load_run(run_dir)
    assert run.info.state == "interrupted" and run.info.ended_at
    assert 3 <= len(run.records) < 24 and all(r.status is Status.ok for r in run.records)
    assert (run_dir / "tables.md").exists()
    # what a person needs on the screen: the tables so far, where the run is, how to go on
    assert "TFLOPs/s: full | forward" in stdout and f"Results: {run_dir}" in stdout
    assert f"Interrupted after {len(run.records)} of 24 cases" in stdout
    resume = f"Resume with: attnbench run {suite} --out {out} --resume {run_dir}"
    assert resume in stdout.splitlines(), stdout


def test_two_runs_at_once_into_one_results_folder_do_not_collide(tmp_path):
    suite = tmp_path / "quick.yaml"
    suite.write_text(QUICK_SUITE.replace("[naive, sdpa, sdpa_math]", "[sdpa]").replace(", backward]", "]"))
    out = tmp_path / "out"
    runs = [start_run(suite, out, f"twin{i}-{os.getpid()}") for i in range(2)]
    for process in runs:
        process.communicate(timeout=200)
        assert process.returncode == 0
    run_dirs = sorted(out.iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        run = load_run(run_dir)
        assert run.info.state == "complete" and len(run.records) == 4 and run.info.run_id == run_dir.name
