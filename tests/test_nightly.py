"""The nightly gate's suite and workflows are what README says they are."""

from __future__ import annotations

import yaml

from attnbench.suite import load_suite
from tests.helpers import ROOT


def test_nightly_suite_guards_the_production_kernels_on_one_gpu():
    suite = load_suite(ROOT / "suites" / "nightly.yaml", profile="none", cuda_available=True)
    cases = suite.cases
    assert {c.kernel for c in cases} == {"sdpa_flash", "sdpa_cudnn", "flex"}
    assert {c.mask.name for c in cases} == {"full", "causal", "causal_document", "sliding_window_causal"}
    assert {c.shape.seqlen for c in cases} == {8192, 16384, 32768}
    assert {c.dtype for c in cases} == {"bfloat16"} and {c.pass_.value for c in cases} == {"forward", "backward"}
    assert len(cases) == 72
    # enough samples per case for compare's significance test to resolve 5%
    assert all(c.budget.min_repeats >= 20 for c in cases)
    cpu = load_suite(ROOT / "suites" / "nightly.yaml", cuda_available=False)
    assert cpu.profile == "cpu" and max(c.shape.seqlen for c in cpu.cases) <= 512


def test_workflows_run_the_gate_and_the_cpu_tests():
    nightly = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    job = nightly["jobs"]["regression-gate"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    text = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    for piece in ("attnbench run suites/nightly.yaml", "attnbench compare", "--format markdown",
                  "attnbench report", "GITHUB_STEP_SUMMARY", "upload-artifact", "actions/cache/save"):
        assert piece in text, piece
    pr = yaml.safe_load((ROOT / ".github" / "workflows" / "pr.yml").read_text())
    assert "pull_request" in pr[True]  # YAML 1.1 reads the key `on` as True
    steps = pr["jobs"]["cpu-tests"]["steps"]
    assert any(step.get("run") == ".ci/run" for step in steps)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "apt-get install -y -q chromium" in ci and "command -v chromium" in ci
