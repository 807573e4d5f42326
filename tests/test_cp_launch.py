"""The CP launcher: ranks started with torchrun's machinery, timeouts, kills, failures, ports;
CP suites (validation, weak scaling), placement (skipped), tables. Stand-in workers
(tests/cp_standins.py) do a real all_reduce over gloo, then behave as named."""

from __future__ import annotations

import importlib
import os
import time

import pytest

from attnbench.cases import CPSpec, Pass
from attnbench.cp import CP_METHODS
from attnbench.cp import launch as cp_launch
from attnbench.cp.execute import execute_cp_case, record_fields
from attnbench.cp.launch import LaunchOptions, LaunchResult, RankFailure, first_host, parse_failures
from attnbench.errors import UserError
from attnbench.results.schema import Status
from attnbench.results.store import load_run
from attnbench.runner.execute import CaseContext
from attnbench.suite import load_suite_text
from tests.helpers import ROOT, run_cli, small_case

STANDINS = "tests.cp_standins"


@pytest.fixture(autouse=True)
def importable_standins(monkeypatch):
    """Rank processes import the stand-ins from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))


@pytest.fixture()
def standin_method():
    """The `standin` CP method registered for the test (and removed after)."""
    module = importlib.import_module("tests.plugins.cp_standin")
    if "standin" not in CP_METHODS:
        CP_METHODS.add("standin", module.StandIn())
    yield
    CP_METHODS.unregister("standin")


def cp_case(world: int = 2, timeout: float = 60.0, mode: str = "ok", device: str = "cpu", **kw):
    case = small_case(**kw)
    return case.model_copy(update={"device": device, "cp": CPSpec(
        method="standin", world_size=world, params={"mode": mode}, timeout_seconds=timeout)})


def ctx(worker: str = "by_mode") -> CaseContext:
    return CaseContext(run_id="test", cp_launch=LaunchOptions(worker=f"{STANDINS}:{worker}"))


_TOKENS: list[str] = []


@pytest.fixture(autouse=True)
def record_case_tokens(monkeypatch):
    """Remember the token of every case launched by this test (other runs may be going on)."""
    real = cp_launch.kill_case

    def kill_case(proc, token, *args, **kwargs):
        _TOKENS.append(token)
        return real(proc, token, *args, **kwargs)

    monkeypatch.setattr(cp_launch, "kill_case", kill_case)
    _TOKENS.clear()
    yield


def leftover_case_processes() -> list[int]:
    """Live processes of the cases this test launched (agents, ranks, their children)."""
    assert _TOKENS, "no case was launched"
    return sorted({pid for token in set(_TOKENS) for pid in cp_launch.case_processes(token)
                   if not cp_launch._is_zombie(pid)})


# -- launching --------------------------------------------------------------------------------
def test_ok_outcome_round_trip(standin_method):
    record = execute_cp_case(cp_case(world=2), ctx())
    assert record.status is Status.ok, (record.reason, record.detail)
    assert record.reason == "all_reduce sum 3"  # 1 + 2: the ranks really met
    assert record.cp.world_size == 2 and record.cp.backend == "gloo"
    assert record.case.cp.world_size == 2 and record.key["cp_method"] == "standin"
    assert record.timing is not None and record.tflops > 0
    assert record.duration_s > 0 and record.started_at
    assert not leftover_case_processes()


def test_hanging_ranks_time_out_with_every_rank_s_stack_every_process_killed_next_case_runs(standin_method):
    timeout = 4.0
    start = time.monotonic()
    record = execute_cp_case(cp_case(world=2, timeout=timeout, mode="sleep"), ctx())
    took = time.monotonic() - start
    assert record.status is Status.timeout, (record.reason, record.detail)
    assert took >= timeout, took  # waited the whole budget (no upper bound: a loaded machine is slow to kill)
    assert "every rank killed" in record.reason
    assert "going to sleep" in record.detail  # the tail of the ranks' stderr
    stacks = record.detail.split("Python stacks of the ranks")[1]
    for rank in (0, 1):  # faulthandler's dump of each rank, its own frames first
        section = stacks.split(f"--- rank {rank} ")[1].split("--- rank")[0]
        assert 'cp_standins.py", line' in section and " in sleep" in section, section[:500]
    assert not leftover_case_processes()
    after = execute_cp_case(cp_case(world=2), ctx())
    assert after.status is Status.ok, after.reason


def test_a_stuck_collective_raises_before_the_case_times_out(standin_method, monkeypatch):
    """Collectives time out before the case does: the rank stuck in one says so, and the rank
    that stopped answering shows where it was (its stack, dumped when torchrun stopped it)."""
    from attnbench.cp.rank_main import COLLECTIVE_TIMEOUT_ENV, collective_timeout

    assert collective_timeout(600.0, env={}).total_seconds() == 300.0  # half the case timeout by default
    assert collective_timeout(600.0, env={COLLECTIVE_TIMEOUT_ENV: "900"}).total_seconds() == 600.0
    monkeypatch.setenv(COLLECTIVE_TIMEOUT_ENV, "3")  # the ranks inherit it (a loaded machine starts slowly)
    record = execute_cp_case(cp_case(world=2, timeout=30.0, mode="hang"), ctx())
    assert record.status is Status.error, (record.reason, record.detail)
    assert record.reason.startswith("rank 0 exited with code 1"), record.reason
    assert "Timed out waiting 3000ms" in record.detail  # gloo's own words, from rank 0's traceback
    victim = record.detail.split("Python stacks of the ranks")[1].split("--- rank 1 ")[1]
    assert " in hang" in victim
    assert not leftover_case_processes()


def test_a_launch_whose_ranks_do_not_get_through_init_is_started_once_more(standin_method, monkeypatch):
    """gloo's full-mesh connect inside init_process_group can hang on a loaded machine (seen
    2 times in 50 W = 8 launches here). A launch whose ranks are not all past init by the
    deadline is killed, with the ranks' stacks, and started again; the record says so."""
    monkeypatch.setattr(cp_launch, "init_deadline", lambda timeout: 0.0)  # the first launch is 'stuck'
    record = execute_cp_case(cp_case(world=2), ctx())
    assert record.status is Status.ok, (record.reason, record.detail)
    assert "first launch: local rank(s) 0, 1 not past init_process_group" in record.detail
    assert "killed and started again" in record.detail
    assert len(set(_TOKENS)) == 2 and not leftover_case_processes()


def test_grandchildren_of_a_hung_rank_are_killed_too(standin_method):
    record = execute_cp_case(cp_case(world=1, timeout=4.0), ctx("spawns_child"))
    assert record.status is Status.timeout
    assert "grandchild" in record.detail
    assert not leftover_case_processes()


@pytest.mark.parametrize(
    "mode, reason, stderr",
    [
        ("exit3", "rank 1 exited with code 3", "victim: exiting with code 3"),
        ("abort", "rank 1 killed by SIGABRT", "victim: calling abort()"),
        ("raises", "rank 1 exited with code 1", "ValueError: stand-in worker failed on purpose"),
    ],
)
def test_a_dying_rank_is_an_error_with_exit_info_and_stderr(standin_method, mode, reason, stderr):
    record = execute_cp_case(cp_case(world=2, mode=mode), ctx())
    assert record.status is Status.error
    assert record.reason.startswith(reason), record.reason
    assert stderr in record.detail
    assert not leftover_case_processes()


def test_consecutive_cases_never_collide(standin_method):
    ports = []
    for i in range(10):
        record = execute_cp_case(cp_case(world=2 if i % 2 else 1), ctx())
        assert record.status is Status.ok, (i, record.reason, record.detail)
        ports.append(int(record.detail.split("port ")[1]))
    assert all(p > 0 for p in ports)
    assert not leftover_case_processes()


def test_suite_records_a_killed_rank_and_goes_on(standin_method, tmp_path, monkeypatch):
    from attnbench.runner.run import run_suite

    suite = load_suite_text(
        """
name: cp_kill
defaults: {heads_q: 4, heads_kv: 2, head_dim: 16, dtype: float32, device: cpu, tokens_per_rank: 32,
           budget: {warmup_seconds: 0.0, measure_seconds: 0.01, min_repeats: 1, max_repeats: 2}}
sweep:
  kernels: [naive]
  masks: [causal]
  cp_methods: [{name: standin, mode: abort}, {name: standin, mode: ok}, {name: standin, mode: unsupported}]
  world_sizes: [2]
""",
        cuda_available=False,
    )
    monkeypatch.setenv("ATTNBENCH_CP_WORKER", f"{STANDINS}:by_mode")
    run = load_run(run_suite(suite, tmp_path))
    assert [r.status for r in run.records] == [Status.error, Status.ok, Status.unsupported]
    assert "SIGABRT" in run.records[0].reason
    assert run.records[2].reason == "stand-in says no"
    tables = (run.path / "tables.md").read_text()
    assert "CP per-GPU TFLOPs/s" in tables and "| 2 (S=64) | error | " in tables
    assert "CP communication per rank" in tables and "(= expected)" in tables
    assert "CP imbalance" in tables


# -- placement ---------------------------------------------------------------------------------
def test_world_size_over_the_gpus_is_skipped_not_launched(standin_method, monkeypatch):
    monkeypatch.setattr(cp_launch, "cuda_device_count", lambda: 2)

    def no_launch(*args, **kwargs):
        raise AssertionError("must not launch")

    monkeypatch.setattr("attnbench.cp.execute.launch_case", no_launch)
    record = execute_cp_case(cp_case(world=4, device="cuda"), ctx())
    assert record.status is Status.skipped
    assert record.reason == "world size 4 needs 4 GPUs (one per rank); this machine has 2"
    two_nodes = CaseContext(run_id="t", cp_launch=LaunchOptions(nnodes=2, rdzv_endpoint="n0:29500"))
    record = execute_cp_case(cp_case(world=6, device="cuda"), two_nodes)
    assert record.status is Status.skipped and "3 GPUs on each of 2 nodes" in record.reason
    record = execute_cp_case(cp_case(world=3, device="cuda"), two_nodes)
    assert record.status is Status.skipped and "not a multiple of the 2 nodes" in record.reason
    monkeypatch.setenv("ATTNBENCH_CP_MAX_CPU_RANKS", "2")
    record = execute_cp_case(cp_case(world=4), ctx())
    assert record.status is Status.skipped and "the cap is 2" in record.reason


def test_unknown_or_unsupported_method_is_not_launched(standin_method, monkeypatch):
    monkeypatch.setattr("attnbench.cp.execute.launch_case", lambda *a, **k: pytest.fail("launched"))
    record = execute_cp_case(cp_case(mode="unsupported"), ctx())
    assert (record.status, record.reason) == (Status.unsupported, "stand-in says no")
    case = cp_case()
    case = case.model_copy(update={"cp": case.cp.model_copy(update={"method": "standinn"})})
    record = execute_cp_case(case, ctx())
    assert record.status is Status.unsupported and "did you mean 'standin'" in record.reason


# -- outcome -> record -------------------------------------------------------------------------
def _result(**kw) -> LaunchResult:
    base = dict(outcome_text=None, returncode=1, timed_out=False, timeout_s=10.0, elapsed_s=1.0, stderr_tail="boom")
    base.update(kw)
    return LaunchResult(**base)


def test_record_fields_from_launch_results():
    case = cp_case()
    fields: dict = {}
    status, reason, detail = record_fields(case, _result(returncode=0), LaunchOptions(), fields)
    assert status is Status.error and "without an outcome" in reason
    other_node = LaunchOptions(nnodes=2, node_rank=1, rdzv_endpoint="n0:1")
    status, reason, _ = record_fields(case, _result(returncode=0), other_node, fields)
    assert status is Status.ok and "node 0" in reason
    status, reason, _ = record_fields(case, _result(outcome_text="{not json"), LaunchOptions(), fields)
    assert status is Status.error and "unreadable outcome" in reason
    ok = '{"status": "ok", "tflops": 1.5, "reason": null}'
    status, _, detail = record_fields(case, _result(outcome_text=ok, returncode=1, failures=[RankFailure(1, -9)]),
                                      LaunchOptions(), fields)
    assert status is Status.ok and fields["tflops"] == 1.5
    assert "after rank 0 wrote its outcome: rank 1 killed by SIGKILL" in detail


def test_parse_torchrun_failure_summary():
    text = """
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 1)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 3 (local_rank: 1)
  exitcode  : -6 (pid: 2)  (SIGABRT)
"""
    failures = parse_failures(text)
    assert [(f.rank, f.exitcode) for f in failures] == [(3, -6), (0, -15)]
    assert failures[0].describe() == "rank 3 killed by SIGABRT"


# -- options -----------------------------------------------------------------------------------
def test_launch_options_from_the_command_line_and_slurm():
    assert LaunchOptions.resolve() == LaunchOptions() or not LaunchOptions.resolve().multi_node
    options = LaunchOptions.resolve(2, 1, "node0:29600", env={})
    assert (options.nnodes, options.node_rank, options.endpoint()) == (2, 1, ("node0", 29600))
    with pytest.raises(UserError, match="needs --rdzv-endpoint"):
        LaunchOptions.resolve(2, 0, None, env={})
    with pytest.raises(UserError, match="--node-rank must be in 0..1"):
        LaunchOptions.resolve(2, 2, "node0:1", env={})
    slurm = {"SLURM_STEP_NUM_NODES": "4", "SLURM_STEP_ID": "0", "SLURM_NODEID": "2", "SLURM_LOCALID": "0",
             "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_STEP_NODELIST": "gpu[07-09,12],cpu1", "MASTER_PORT": "29700"}
    options = LaunchOptions.resolve(env=slurm)
    assert (options.nnodes, options.node_rank, options.rdzv_endpoint) == (4, 2, "gpu07:29700")
    assert options.source == "Slurm environment"
    with pytest.raises(UserError, match="one attnbench per node"):
        LaunchOptions.resolve(env={**slurm, "SLURM_STEP_TASKS_PER_NODE": "8(x4)"})
    assert not LaunchOptions.resolve(env={"SLURM_NNODES": "4", "SLURM_NODEID": "0"}).multi_node  # batch script
    assert first_host("node001") == "node001" and first_host("a[3-5]b,c") == "a3b"


def test_multi_node_command_rotates_ports_and_ids():
    case = cp_case(world=4)
    options = LaunchOptions(nnodes=2, node_rank=1, rdzv_endpoint="n0:29500")
    one = cp_launch.agent_command(case, options, "c", "o", seq=5)
    two = cp_launch.agent_command(case, options, "c", "o", seq=6)
    assert "--nproc-per-node=2" in one and "--node-rank=1" in one and "--rdzv-backend=static" in one
    assert "--rdzv-endpoint=n0:29501" in one and "--rdzv-endpoint=n0:29502" in two
    assert [a for a in one if a.startswith("--rdzv-id")] != [a for a in two if a.startswith("--rdzv-id")]
    single = cp_launch.agent_command(case, LaunchOptions(), "c", "o", seq=0)
    assert "--rdzv-endpoint=localhost:0" in single  # a port the kernel picks: no collisions


def test_timeout_override_reaches_cp_and_kernel_cases():
    cp, kernel = cp_case(timeout=600.0).with_timeout(30), small_case().with_timeout(30)
    assert cp.cp.timeout_seconds == 30.0 and cp.budget.timeout_seconds == 30.0
    assert kernel.budget.timeout_seconds == 30.0 and kernel.cp is None


# -- suites ------------------------------------------------------------------------------------
CP_SUITE = """\
name: cp_test
defaults:
  heads_q: 8
  heads_kv: 2
  head_dim: 32
  dtype: float32
  passes: [forward, backward]
  tokens_per_rank: 128
  cp_timeout_seconds: 45
sweep:
  kernels: [naive]
  masks: [full, causal]
  cp_methods: [ring_p2p, {name: usp, ulysses_degree: 2}]
  world_sizes: [1, 2, 4]
"""


def test_weak_scaling_expansion():
    suite = load_suite_text(CP_SUITE, cuda_available=False)
    cases = suite.cases
    assert len(cases) == 2 * 2 * 3 * 2  # methods x masks x worlds x passes (x 1 kernel)
    assert {(c.cp.world_size, c.shape.seqlen) for c in cases} == {(1, 128), (2, 256), (4, 512)}
    assert all(c.cp.scaling == "weak" and c.cp.timeout_seconds == 45.0 for c in cases)
    first = cases[:5]  # the methods of one problem one after the other (interleaved, as kernels are)
    assert [(c.cp.method, c.mask.name, c.cp.world_size, c.pass_) for c in first] == [
        ("ring_p2p", "full", 1, Pass.forward), ("usp", "full", 1, Pass.forward),
        ("ring_p2p", "full", 1, Pass.backward), ("usp", "full", 1, Pass.backward),
        ("ring_p2p", "full", 2, Pass.forward),
    ]
    assert cases[-1].cp.method == "usp" and cases[-1].cp.params == {"ulysses_degree": 2}
    assert len({c.key_id() for c in cases}) == len(cases)


def test_strong_scaling_expansion():
    text = CP_SUITE.replace("  tokens_per_rank: 128\n", "  scaling: strong\n").replace(
        "  world_sizes: [1, 2, 4]\n", "  world_sizes: [1, 2, 4]\n  seqlens: [512, 1K]\n")
    cases = load_suite_text(text, cuda_available=False).cases
    assert {c.shape.seqlen for c in cases if c.cp.world_size == 4} == {512, 1024}
    assert all(c.cp.scaling == "strong" for c in cases)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("[ring_p2p, {name: usp", "[ring_pp, {name: usp", "cp_test.yaml:13: sweep.cp_methods[0]: unknown CP method 'ring_pp'; did you mean 'ring_p2p'"),
        ("world_sizes: [1, 2, 4]", "world_sizes: [1, 0, 4]", "cp_test.yaml:14: sweep.world_sizes[1]: must be >= 1"),
        ("world_sizes: [1, 2, 4]", "world_sizes: [1, 2, 2]", "cp_test.yaml:14: sweep.world_sizes[2]: duplicate world size 2"),
        ("  world_sizes: [1, 2, 4]\n", "", "cp_test.yaml:10: sweep.world_sizes: required with cp_methods"),
        ("  tokens_per_rank: 128\n", "  tokens_per_rank: 128\n  scaling: strong\n", "cp_test.yaml:8: defaults.tokens_per_rank: only for weak scaling"),
        ("  tokens_per_rank: 128\n", "  scaling: weak\n", "cp_test.yaml:8: defaults.scaling: weak scaling needs defaults.tokens_per_rank"),
        ("world_sizes: [1, 2, 4]", "world_sizes: [1, 2, 4]\n  seqlens: [1K]", "cp_test.yaml:15: sweep.seqlens: with weak scaling"),
        ("  tokens_per_rank: 128\n", "  scaling: strong\n", "cp_test.yaml:10: sweep.seqlens: required for strong scaling"),
        ("  tokens_per_rank: 128\n", "  scaling: strong\n", None),
        ("cp_timeout_seconds: 45", "cp_timeout_seconds: 0", "cp_test.yaml:9: defaults.cp_timeout_seconds: must be > 0"),
        ("  cp_methods: [ring_p2p, {name: usp, ulysses_degree: 2}]\n  world_sizes: [1, 2, 4]\n", "",
         "cp_test.yaml:8: defaults.tokens_per_rank: only for context-parallel suites"),
        ("cp_methods: [ring_p2p, {name: usp, ulysses_degree: 2}]", "cp_methods: [ring_p2p, {ulysses_degree: 2}]",
         "cp_test.yaml:13: sweep.cp_methods[1]: a CP method mapping needs a `name` key"),
    ],
)
def test_cp_suite_errors_name_the_line(old, new, message):
    text = CP_SUITE.replace(old, new)
    if message is None:  # strong scaling with a global length that 4 ranks cannot split
        text = text.replace("  world_sizes: [1, 2, 4]\n", "  world_sizes: [1, 2, 4]\n  seqlens: [512, 1022]\n")
        message = "cp_test.yaml:15: sweep.seqlens[1]: global seqlen 1022 is not a multiple of 4, which ring_p2p needs"
    assert text != CP_SUITE or old == new
    with pytest.raises(UserError) as info:
        load_suite_text(text, source="cp_test.yaml", cuda_available=False)
    assert str(info.value).startswith(message), str(info.value)


def test_shipped_cp_suite_paper_setting_and_cpu_profile():
    from attnbench.suite import load_suite

    paper = load_suite(ROOT / "suites" / "cp.yaml", profile="none", cuda_available=True)
    worlds = sorted({c.cp.world_size for c in paper.cases})
    assert worlds == [8, 16, 32, 64, 96]
    assert {c.shape.seqlen // c.cp.world_size for c in paper.cases} == {8192}
    assert {(c.shape.heads_q, c.shape.heads_kv, c.shape.head_dim, c.dtype, c.kernel) for c in paper.cases} == {
        (64, 8, 128, "bfloat16", "flex")}
    assert len({c.mask.name for c in paper.cases}) == 13 and {c.pass_ for c in paper.cases} == {Pass.forward, Pass.backward}
    cpu = load_suite(ROOT / "suites" / "cp.yaml", cuda_available=False)
    assert cpu.profile == "cpu" and sorted({c.cp.world_size for c in cpu.cases}) == [2, 4]
    assert {"full", "causal", "causal_document"} <= {c.mask.name for c in cpu.cases}


def test_validate_plans_cp_cases(standin_method, monkeypatch):
    from attnbench.runner.plan import plan_suite

    monkeypatch.setenv("ATTNBENCH_CP_MAX_CPU_RANKS", "2")
    suite = load_suite_text(CP_SUITE.replace("[ring_p2p, {name: usp, ulysses_degree: 2}]",
                                             "[standin, {name: standin, mode: unsupported}]"), cuda_available=False)
    plan = plan_suite(suite)
    actions = {(p.case.cp.params.get("mode"), p.case.cp.world_size): p.action for p in plan}
    assert actions[(None, 1)] == "run" and actions[(None, 4)] == "skipped"
    assert actions[("unsupported", 2)] == "unsupported"
    run = [p for p in plan if p.action == "run"]
    assert all(p.prediction.case_seconds > 1 for p in run)


# -- the command line --------------------------------------------------------------------------
def test_cli_runs_a_cp_suite_with_tables(tmp_path):
    suite = tmp_path / "cp_cli.yaml"
    suite.write_text(
        "name: cp_cli\n"
        "defaults: {heads_q: 4, heads_kv: 2, head_dim: 16, dtype: float32, device: cpu, tokens_per_rank: 32,\n"
        "           budget: {warmup_seconds: 0.0, measure_seconds: 0.01, min_repeats: 1, max_repeats: 2}}\n"
        "sweep: {kernels: [naive], masks: [causal], cp_methods: [{name: standin, mode: hang}, standin], world_sizes: [1, 2]}\n"
    )
    env = {"ATTNBENCH_PLUGINS": "tests.plugins.cp_standin", "ATTNBENCH_CP_WORKER": f"{STANDINS}:by_mode"}
    listing = run_cli("list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "standin" in listing.stdout and "Context-parallel methods" in listing.stdout
    result = run_cli("run", str(suite), "--out", str(tmp_path / "results"), "--timeout", "3", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "context parallel: single node" in out
    assert "CP per-GPU TFLOPs/s" in out and "timeout" in out
    run = load_run(next((tmp_path / "results").iterdir()))
    # the methods of one problem one after the other: W = 1 (hang, standin), then W = 2
    assert [r.status for r in run.records] == [Status.timeout, Status.ok, Status.timeout, Status.ok]
    assert all(r.case.cp.timeout_seconds == 3.0 for r in run.records)
    bad = run_cli("run", str(suite), "--nnodes", "2", env=env)
    assert bad.returncode == 2 and "--rdzv-endpoint" in bad.stderr


def test_per_gpu_figure_above_the_device_peak_is_invalid():
    from attnbench.cp.execute import above_peak

    assert above_peak(Status.ok, None, 2.0, 1.0)[0] is Status.invalid
    assert above_peak(Status.ok, None, 0.5, 1.0) == (Status.ok, None)
    assert above_peak(Status.ok, None, 2.0, None) == (Status.ok, None)
    assert above_peak(Status.invalid, "wrong", 2.0, 1.0) == (Status.invalid, "wrong")


def _free_port_range(count: int) -> int:
    """A base port with `count` consecutive free ports after it (probed; retried)."""
    import random
    import socket

    for _ in range(50):
        base = random.randint(20000, 60000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def test_two_nodes_on_localhost_through_the_cli_node_0_records_resume_stays_in_step(tmp_path):
    """--nnodes 2 on one machine: one rank per node, W = 2. Node 0 writes the records; node 1
    only takes part. After a run that lost its last cases, --resume on both nodes runs just
    those, and the nodes still meet on the same ports (a case on mismatched ports would wait
    for its rendezvous and fail)."""
    import json
    import subprocess
    import sys

    from tests.helpers import ROOT

    suite = tmp_path / "two_nodes.yaml"
    suite.write_text(
        "name: two_nodes\n"
        "defaults: {heads_q: 4, heads_kv: 2, head_dim: 16, dtype: float32, device: cpu, tokens_per_rank: 32,\n"
        "           passes: [forward], budget: {warmup_seconds: 0.0, measure_seconds: 0.01, min_repeats: 1, max_repeats: 2}}\n"
        "sweep: {kernels: [naive], masks: [full, causal], cp_methods: [standin], world_sizes: [2]}\n"
    )
    port = _free_port_range(5)
    env = {"ATTNBENCH_PLUGINS": "tests.plugins.cp_standin", "ATTNBENCH_CP_WORKER": f"{STANDINS}:by_mode"}

    def both(*extra: str, node1_extra: tuple = ()):
        common = ["run", str(suite), "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--timeout", "60"]
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), COLUMNS="200", **env)
        node1 = subprocess.Popen([sys.executable, "-m", "attnbench", *common, "--node-rank", "1", "--out",
                                  str(tmp_path / "node1"), *node1_extra], env=full_env, cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        node0 = run_cli(*common, "--node-rank", "0", "--out", str(tmp_path / "node0"), *extra, env=env, timeout=300)
        out1, err1 = node1.communicate(timeout=120)
        assert node0.returncode == 0, node0.stdout + node0.stderr
        assert node1.returncode == 0, out1 + err1
        return node0.stdout, out1

    out0, out1 = both()
    [run_dir] = list((tmp_path / "node0").iterdir())
    run = load_run(run_dir)
    assert [r.status for r in run.records] == [Status.ok] * 2, [(r.status, r.reason) for r in run.records]
    assert all(r.reason == "all_reduce sum 3" for r in run.records)  # both nodes' ranks met in every case
    assert "took part in 2 CP cases" in out1 and "node 0 writes the records" in out1
    assert not (tmp_path / "node1").exists()  # node 1 writes nothing

    # the run lost its last case (killed): resume on both nodes runs exactly that one
    records = (run_dir / "records.jsonl").read_text().splitlines()
    (run_dir / "records.jsonl").write_text(records[0] + "\n")
    kept = json.loads(records[0])["case_id"]
    out0, out1 = both("--resume", str(run_dir), node1_extra=("--resume", "latest"))
    run = load_run(run_dir)
    assert len(run.records) == 2 and run.records[0].case_id == kept
    assert run.records[1].status is Status.ok, (run.records[1].status, run.records[1].reason)
    assert "took part in 1 CP cases" in out1
    assert not (tmp_path / "node1").exists()


def test_validate_says_which_cp_accuracy_checks_will_be_sampled():
    from rich.console import Console

    from attnbench.cli.screens import print_plan
    from attnbench.results.schema import Prediction
    from attnbench.runner.plan import PlannedCase

    suite = load_suite_text(CP_SUITE, cuda_available=False)
    cases = [c for c in suite.cases if c.cp.world_size == 4][:3]
    sampled = cases[0].model_copy(update={"cp": cases[0].cp.model_copy(update={"check_rows": 16})})
    plan = [PlannedCase(sampled, "run", None, Prediction(case_seconds=1.0)),
            PlannedCase(cases[1], "run", None, Prediction(case_seconds=1.0)),
            PlannedCase(cases[2], "skipped", "predicted 900 s", None)]
    console = Console(record=True, width=200)
    print_plan(console, suite, plan)
    text = console.export_text()
    assert "CP accuracy checks: 1 full, 1 sampled" in text
    assert "12.50% to 12.50% of the query rows checked exactly" in text  # 16 rows x 4 ranks of 512
