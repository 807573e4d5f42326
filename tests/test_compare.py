"""compare on synthetic runs: known shifts found, noise left alone, every state, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnbench.compare import State, compare_runs, significance
from attnbench.compare.render import to_json, to_markdown
from attnbench.errors import UserError
from attnbench.results.schema import Status
from tests.helpers import run_cli
from tests.synthetic_runs import Spec, case, gpu_env, make_run, noisy_samples, write_run

N = 30  # samples per case, like a GPU case with a 1 s budget
NOISE = 0.03  # 3% relative noise: p80/p20 about 5%


def pair(shift: float, seed: int, *, noise: float = NOISE, n: int = N, cases=None):
    """Two in-memory runs of the same cases; the current one `shift` slower (0.10 = +10%)."""
    rng = np.random.default_rng(seed)
    cases = cases or [case("flex", "causal", 8192)]
    base = make_run([Spec(c, samples=noisy_samples(1e-3, n, noise, rng)) for c in cases])
    current = make_run([Spec(c, samples=noisy_samples(1e-3 * (1 + shift), n, noise, rng)) for c in cases])
    return base, current


def test_planted_10_percent_slowdown_is_found_at_the_default_threshold():
    found = 0
    for seed in range(100):
        result = compare_runs(*pair(0.10, seed))
        [c] = result.cases
        found += c.state is State.regressed
        assert c.noise is None  # 3% noise with 30 samples resolves 5%
    assert found >= 98, f"the planted 10% slowdown was found in only {found}/100 seeds"
    faster = compare_runs(*pair(-0.10, 1))
    assert faster.cases[0].state is State.improved


def test_two_runs_from_the_same_noise_stay_quiet_over_many_seeds():
    flagged = 0
    for seed in range(200):
        result = compare_runs(*pair(0.0, seed))
        flagged += sum(c.state in (State.regressed, State.improved) for c in result.cases)
        assert result.exit_code() in (0, 1)
    assert flagged <= 2, f"{flagged}/200 same-noise comparisons were flagged"


def test_heavier_noise_warns_and_still_stays_quiet():
    flagged = warned = 0
    for seed in range(200):
        result = compare_runs(*pair(0.0, seed, noise=0.10, n=10))
        [c] = result.cases
        flagged += c.state in (State.regressed, State.improved)
        warned += c.noise is not None
    assert flagged <= 4, f"{flagged}/200 noisy same-code comparisons were flagged"
    assert warned >= 190  # 10% noise with 10 samples cannot resolve 5%
    result = compare_runs(*pair(0.0, 0, noise=0.10, n=10))
    assert "repeats" in result.cases[0].noise
    advice = " ".join(result.advice)
    assert "CUDA graphs" in advice and "locked clocks" in advice


def test_a_small_significant_change_within_the_threshold_is_unchanged():
    result = compare_runs(*pair(0.02, 3, noise=0.002))
    [c] = result.cases
    assert c.significant and c.state is State.unchanged and "within" in c.reason


def test_too_few_samples_for_the_rank_test_use_disjoint_ranges():
    ok, p, test = significance([1.0, 1.01, 1.02], [2.0, 2.01, 2.02], 0.01)
    assert ok and p is None and test == "disjoint ranges"
    ok, _, _ = significance([1.0, 1.5, 2.0], [1.4, 2.1, 2.2], 0.01)
    assert not ok
    # two samples a side: disjoint by chance one time in three, so never significant
    assert significance([1.0, 1.01], [2.0, 2.01], 0.01) == (False, None, "too few samples")
    assert significance([1.0] * 5, [2.0] * 5, 0.01)[2] == "mann-whitney"  # 5 a side can reach p < 0.01
    base = make_run([Spec(case(), samples=[1e-3, 1.01e-3])])
    current = make_run([Spec(case(), samples=[2e-3, 2.01e-3])])
    [c] = compare_runs(base, current).cases
    assert c.state is State.unchanged and "few samples" in c.noise and "at least 5 repeats" in c.noise


@pytest.fixture
def every_state(tmp_path):
    """One case per state, in two runs written to disk."""
    rng = np.random.default_rng(7)
    s = lambda median: noisy_samples(median, N, 0.01, rng)  # noqa: E731
    c = {name: case("flex", "causal", 1024 * (i + 1)) for i, name in enumerate(
        ["regressed", "improved", "unchanged", "new_failure", "fixed", "added", "removed", "incomparable", "still"])}
    base = [
        Spec(c["regressed"], samples=s(1e-3)),
        Spec(c["improved"], samples=s(1e-3)),
        Spec(c["unchanged"], samples=s(1e-3)),
        Spec(c["new_failure"], samples=s(1e-3)),
        Spec(c["fixed"], Status.error, reason="RuntimeError: boom"),
        Spec(c["removed"], samples=s(1e-3)),
        Spec(c["incomparable"], samples=s(1e-3)),
        Spec(c["still"], Status.oom),
    ]
    current = [
        Spec(c["regressed"], samples=s(1.2e-3)),
        Spec(c["improved"], samples=s(0.8e-3)),
        Spec(c["unchanged"], samples=s(1e-3)),
        Spec(c["new_failure"], Status.oom, reason="CUDA out of memory"),
        Spec(c["fixed"], samples=s(1e-3)),
        Spec(c["added"], samples=s(1e-3)),
        Spec(c["incomparable"], Status.skipped, reason="predicted over the case budget"),
        Spec(c["still"], Status.oom),
    ]
    b = write_run(tmp_path, base)
    r = write_run(tmp_path, current)
    return b, r, {name: cs.key_id() for name, cs in c.items()}


def test_every_state_is_produced(every_state):
    base, current, ids = every_state
    result = compare_runs(base, current)
    states = {c.case_id: c.state for c in result.cases}
    assert states[ids["regressed"]] is State.regressed
    assert states[ids["improved"]] is State.improved
    assert states[ids["unchanged"]] is State.unchanged
    assert states[ids["new_failure"]] is State.new_failure
    assert states[ids["fixed"]] is State.fixed
    assert states[ids["added"]] is State.added
    assert states[ids["removed"]] is State.removed
    assert states[ids["incomparable"]] is State.incomparable
    assert states[ids["still"]] is State.unchanged
    # noisy needs rounds with canary samples: tests/test_compare_canary.py
    assert {s.value for s in states.values()} == {s.value for s in State} - {"noisy"}
    by_id = {c.case_id: c for c in result.cases}
    assert "CUDA out of memory" in by_id[ids["new_failure"]].reason
    assert "skipped" in by_id[ids["incomparable"]].reason
    # sorted by severity: new failure first, unchanged last
    order = [c.state.severity for c in result.cases]
    assert order == sorted(order) and result.cases[0].state is State.new_failure
    assert result.geomeans["flex"]["cases"] == 3
    assert result.exit_code("regression") == 1
    assert result.exit_code("failure") == 1
    assert result.exit_code("never") == 0


def test_environment_change_makes_cases_incomparable_unless_allowed():
    rng = np.random.default_rng(0)
    c = case()
    specs_b = [Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))]
    specs_c = [Spec(c, samples=noisy_samples(1.3e-3, N, 0.01, rng))]
    for field, value, name in [("torch__version", "2.14.0+cu128", "torch"), ("driver_version", "580.1", "driver"),
                               ("triton", "3.6.0", "triton"), ("torch__cuda", "13.0", "cuda"),
                               ("devices", [{"index": 0, "name": "NVIDIA H200"}], "device")]:
        base = make_run(specs_b, gpu_env())
        current = make_run(specs_c, gpu_env(**{field: value}))
        result = compare_runs(base, current)
        [cc] = result.cases
        assert cc.state is State.incomparable, name
        assert f"{name} differs" in cc.reason
        assert result.exit_code() == 0
        allowed = compare_runs(base, current, allow_env_change=True)
        assert allowed.cases[0].state is State.regressed
        assert any(f"{name} differs" in w for w in allowed.warnings)
    # host name and attnbench's own commit are expected to differ: informational only
    result = compare_runs(make_run(specs_b, gpu_env()),
                          make_run(specs_c, gpu_env(hostname="gpu-node-2", attnbench__git_commit="b" * 40)))
    assert result.cases[0].state is State.regressed
    assert {d.field for d in result.info_differences} == {"hostname", "attnbench commit"}


def test_cpu_cases_ignore_gpu_driver_and_cuda():
    rng = np.random.default_rng(0)
    c = case("naive", device="cpu")
    base = make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))], gpu_env())
    current = make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))], gpu_env(driver_version="999"))
    assert compare_runs(base, current).cases[0].state is State.unchanged


def test_throttled_samples_are_flagged():
    rng = np.random.default_rng(0)
    c = case()
    base = make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))])
    current = make_run([Spec(c, samples=noisy_samples(1.2e-3, N, 0.01, rng),
                             nvml=[{"index": 0, "throttle_reasons": ["GpuIdle", "SwPowerCap", "HwSlowdown"]}])])
    [cc] = compare_runs(base, current).cases
    assert cc.state is State.regressed
    assert cc.throttled == ["current: SwPowerCap", "current: HwSlowdown"]  # GpuIdle is not throttling
    # no per-case snapshot: the run's snapshot is used, and the run is flagged
    env = gpu_env(nvml=[{"index": 0, "throttle_reasons": ["HwThermalSlowdown"]}])
    result = compare_runs(base, make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))], env))
    assert result.cases[0].throttled == ["current: HwThermalSlowdown"]
    assert any("throttling" in w for w in result.warnings)
    assert "throttled" in to_markdown(compare_runs(base, current))


def test_cp_cases_group_by_method():
    from attnbench.cases import CPSpec

    rng = np.random.default_rng(0)
    c = case("flex").model_copy(update={"cp": CPSpec(method="ring", world_size=4)})
    assert c.key()["cp_method"] == "ring"
    base = make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))])
    current = make_run([Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))])
    assert list(compare_runs(base, current).geomeans) == ["ring"]


def test_markdown_and_json_escape_and_carry_everything(every_state):
    base, current, _ = every_state
    result = compare_runs(base, current)
    md = to_markdown(result)
    assert md.startswith("## attnbench compare: ") and "regressions found" in md
    assert "| new failure |" in md and "Geometric mean" in md
    data = json.loads(to_json(result))
    assert data["counts"]["regressed"] == 1 and data["exit_code"] == 1
    assert {c["state"] for c in data["cases"]} == {s.value for s in State} - {"noisy"}  # noisy: test_compare_canary.py
    # strings from records are escaped in markdown
    rng = np.random.default_rng(0)
    evil = case("flex", "causal", 4096, note="<img src=x onerror=alert(1)>|`x`")
    r = compare_runs(make_run([Spec(evil, samples=noisy_samples(1e-3, N, 0.01, rng))]),
                     make_run([Spec(evil, samples=noisy_samples(2e-3, N, 0.01, rng))]))
    md = to_markdown(r)
    assert "<img" not in md and "&lt;img" in md and "\\|" in md


def test_unrelated_runs_and_a_run_with_itself_are_refused_in_plain_words(tmp_path):
    from attnbench.compare import nothing_to_compare

    rng = np.random.default_rng(0)
    a = write_run(tmp_path, [Spec(case("flex", "causal", 4096), samples=noisy_samples(1e-3, N, 0.01, rng))], suite="one")
    b = write_run(tmp_path, [Spec(case("sdpa", "full", 2048), samples=noisy_samples(1e-3, N, 0.01, rng)),
                             Spec(case("sdpa", "full", 4096), samples=noisy_samples(1e-3, N, 0.01, rng))], suite="two")
    problem = nothing_to_compare(a, b)
    assert problem.startswith("no case in common") and "1 case(s) of suite 'one'" in problem
    assert "2 case(s) of suite 'two'" in problem
    assert "the same run" in nothing_to_compare(a, a)
    partly = write_run(tmp_path, [Spec(case("flex", "causal", 4096), samples=noisy_samples(1e-3, N, 0.01, rng)),
                                  Spec(case("sdpa", "full", 2048), samples=noisy_samples(1e-3, N, 0.01, rng))])
    assert nothing_to_compare(a, partly) is None  # one case in common: a real comparison


def test_bad_threshold_is_a_user_error():
    base, current = pair(0.0, 0)
    with pytest.raises(UserError):
        compare_runs(base, current, threshold=0)


# -- the command line ----------------------------------------------------------------------


def test_cli_exit_codes(every_state, tmp_path):
    base, current, _ = every_state
    root = str(tmp_path)
    table = run_cli("compare", base.info.run_id, current.info.run_id, "--root", root)
    assert table.returncode == 1, table.stderr
    assert "regressed" in table.stdout and "new failure" in table.stdout and "geometric mean" in table.stdout
    assert run_cli("compare", "latest~1", "latest", "--root", root, "--fail-on", "never").returncode == 0
    assert run_cli("compare", "latest~1", "latest", "--root", root, "--fail-on", "failure").returncode == 1
    # a run against itself says so, instead of "N unchanged"
    same = run_cli("compare", "latest", current.info.run_id, "--root", root, "--format", "json")
    assert same.returncode == 2 and same.stdout == "", same.stdout
    assert "the same run" in same.stderr and len(same.stderr.strip().splitlines()) == 1
    md = run_cli("compare", str(base.path), str(current.path), "--format", "markdown")
    assert md.returncode == 1 and md.stdout.startswith("## attnbench compare")


def test_cli_fail_on_failure_ignores_plain_regressions(tmp_path):
    rng = np.random.default_rng(1)
    c = case()
    write_run(tmp_path, [Spec(c, samples=noisy_samples(1e-3, N, 0.01, rng))])
    write_run(tmp_path, [Spec(c, samples=noisy_samples(1.5e-3, N, 0.01, rng))])
    assert run_cli("compare", "latest~1", "latest", "--root", str(tmp_path)).returncode == 1
    assert run_cli("compare", "latest~1", "latest", "--root", str(tmp_path), "--fail-on", "failure").returncode == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["compare", "nope", "latest"], ["nope"]),
        (["compare", "latest", "latest", "--format", "xml"], ["--format", "xml"]),
        (["compare", "latest", "latest", "--fail-on", "sometimes"], ["--fail-on"]),
        (["compare", "latest", "latest", "--threshold", "-1"], ["--threshold"]),
        (["compare", "latest~5", "latest"], ["latest~5"]),
    ],
)
def test_cli_bad_input_is_exit_2(tmp_path, args, words):
    write_run(tmp_path, [Spec(case(), samples=[1e-3] * 5)])
    result = run_cli(*args, "--root", str(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr
