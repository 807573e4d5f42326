"""The CLI end to end, in real subprocesses: commands, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT, run_cli


def assert_clean_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr, result.stderr


def test_list_json_shows_kernels_with_availability_and_masks():
    result = run_cli("list", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    kernels = {k["name"]: k for k in data["kernels"]}
    assert kernels["naive"]["available"] is True
    assert kernels["sdpa_cudnn"]["available"] is False and "CUDA" in kernels["sdpa_cudnn"]["reason"]
    assert len(data["masks"]) == 15
    assert {m["name"] for m in data["cp_methods"]} == {"ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain", "torch_cp"}
    torch_cp = next(m for m in data["cp_methods"] if m["name"] == "torch_cp")
    assert torch_cp["available"] is False and "CUDA" in torch_cp["reason"]
    # at 80 columns every name is whole (none cut to "sdpa_cu…"), long fields wrap in their cells
    human = run_cli("list", env={"COLUMNS": "80"})
    assert human.returncode == 0, human.stderr
    assert "…" not in human.stdout and max(len(line) for line in human.stdout.splitlines()) <= 80
    cells = {cell.strip() for line in human.stdout.splitlines() for cell in line.split("│")}
    for name in [*kernels, *(m["name"] for m in data["masks"]), *(m["name"] for m in data["cp_methods"])]:
        assert name in cells, f"{name} is not shown whole in its cell"


def test_masks_info_json():
    result = run_cli("masks", "info", "causal_document", "--seqlen", "16K", "--seed", "7", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["seqlen"] == 16384 and info["params"]["seed"] == 7
    assert info["num_documents"] >= 2 and 0 < info["density"] < 1
    windowed = run_cli("masks", "info", "sliding_window", "--seqlen", "4096", "--set", "window=16", "--json")
    w = json.loads(windowed.stdout)
    assert w["area"] == sum(min(4095, i + 16) - max(0, i - 16) + 1 for i in range(4096))


@pytest.mark.parametrize(
    "args, words",
    [
        (["masks", "info", "casual", "--seqlen", "128"], ["did you mean 'causal'"]),
        (["masks", "info", "sliding_window", "--seqlen", "128", "--set", "windw=3"], ["did you mean 'window'"]),
        (["masks", "info", "sliding_window", "--seqlen", "128", "--set", "window=-3"], ["window"]),
        (["masks", "info", "full", "--seqlen", "lots"], ["lots"]),
        (["run", "no/such/suite.yaml"], ["no/such/suite.yaml"]),
        (["run", "suites/smoke.yaml", "--kernels", "flexx"], ["did you mean 'flex'"]),
        (["run", "suites/smoke.yaml", "--profile", "gpu"], ["gpu"]),
        (["show", "no-such-run", "--root", "results"], ["no-such-run"]),
        (["run", "suites/smoke.yaml", "--no-such-option"], ["--no-such-option"]),
        (["run", "suites/smoke.yaml", "--out", "README.md"], ["README.md", "cannot create the run folder"]),
        (["list", "--device", "tpu"], ["'tpu'", "cpu or cuda"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    assert_clean_error(run_cli(*args), *words)


def test_validate_reports_counts_unsupported_and_duration():
    result = run_cli("validate", "suites/longctx.yaml")
    assert result.returncode == 0, result.stderr
    assert "profile cpu" in result.stdout and "selected automatically" in result.stdout
    assert "unsupported" in result.stdout and "predicted duration" in result.stdout
    assert "sdpa_cudnn" in result.stdout


def test_run_then_show_and_env(tmp_path):
    out = tmp_path / "results"
    result = run_cli("run", "suites/smoke.yaml", "--out", str(out), "--kernels", "naive,sdpa", "--masks", "causal,causal_document",
                     "--seqlens", "128")
    assert result.returncode == 0, result.stderr
    assert "TFLOPs/s: causal_document(lengths_at=8192) | forward" in result.stdout
    assert "Peak memory (linux_vmhwm_rss_sampled): forward" in result.stdout
    # not a terminal (a pipe, a CI log): one plain line per finished case, with the time left
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/8" for i in range(1, 9)]
    assert all(" ok " in line and "TFLOPs/s in" in line for line in lines)
    assert "left" in lines[0] and "predicted: about" in result.stdout and "Took " in result.stdout
    [run_dir] = list(out.iterdir())
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 8 and {r["status"] for r in records} == {"ok"}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "complete" and info["suite"]["filters"]
    assert info["environment"]["torch"] and info["suite"]["sha256"]
    shown = run_cli("show", "latest", "--root", str(out))
    assert shown.returncode == 0 and "TFLOPs/s: causal | backward" in shown.stdout
    env = run_cli("env", "--json")
    assert env.returncode == 0 and json.loads(env.stdout)["nvml"]["available"] is False


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text()
    for command in ("attnbench list", "attnbench masks info", "attnbench validate", "attnbench run", "attnbench env",
                    "attnbench show", "attnbench compare", "attnbench history", "attnbench report", "attnbench masks show",
                    "attnbench inspect", "attnbench tune", "attnbench netbench", "attnbench advise"):
        assert command in readme
    for section in ("## When things go wrong", "## Context parallelism", "## Catching regressions nightly",
                    "## Adding a kernel", "## Adding a mask"):
        assert section in readme
    for status in ("ok", "unsupported", "skipped", "oom", "timeout", "error", "invalid"):
        assert f"| `{status}` |" in readme
