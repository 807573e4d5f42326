"""README's examples are real: the kernel and mask of "Adding a kernel/mask" run as plugins."""

from __future__ import annotations

import json
import re

from tests.helpers import ROOT, run_cli


def python_block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    assert test_command.split("&&")[-1].strip() in ci


def test_readme_kernel_and_mask_examples_run_as_plugins(tmp_path):
    (tmp_path / "my_kernels.py").write_text(python_block_after("Adding a kernel"))
    (tmp_path / "my_masks.py").write_text(python_block_after("Adding a mask"))
    env = {"ATTNBENCH_PLUGINS": "my_kernels,my_masks", "PYTHONPATH": str(tmp_path)}
    listing = json.loads(run_cli("list", "--json", env=env).stdout)
    assert "chunked_eager" in [k["name"] for k in listing["kernels"]]
    assert "dilated_local" in [m["name"] for m in listing["masks"]]
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: readme\n"
        "defaults: {heads_q: 4, heads_kv: 2, head_dim: 16, dtype: float32, passes: [forward],\n"
        "  budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 2, max_repeats: 2}}\n"
        "sweep: {kernels: [naive, chunked_eager], masks: [{name: dilated_local, span: 40, sink: 3}, causal], seqlens: [300]}\n"
    )
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    [run_dir] = list((tmp_path / "out").iterdir())
    statuses = [json.loads(line)["status"] for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert statuses == ["ok"] * 4
