"""Shared test helpers: run the CLI in a real subprocess, small cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from attnbench.cases import Budget, Case, MaskChoice, Pass, Shape

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "tests.plugins"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`attnbench ARGS` in a fresh process (plugins and registries start clean)."""
    env = dict(env or {})
    full_env = dict(os.environ)
    paths = [env.pop("PYTHONPATH", ""), str(ROOT), full_env.get("PYTHONPATH", "")]
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    full_env.setdefault("COLUMNS", "200")
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


TINY_BUDGET = Budget(warmup_seconds=0.0, measure_seconds=0.01, min_repeats=2, max_repeats=3, case_seconds=60)


def small_case(kernel: str = "naive", mask: str = "causal", *, seqlen: int = 128, dtype: str = "float32",
               pass_: Pass = Pass.forward, heads: tuple[int, int] = (4, 2), head_dim: int = 32, **params) -> Case:
    return Case(
        kernel=kernel,
        mask=MaskChoice(name=mask, params=params),
        shape=Shape(batch=1, heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim, seqlen=seqlen),
        dtype=dtype,
        pass_=pass_,
        budget=TINY_BUDGET,
    )
