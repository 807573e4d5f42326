"""Synthetic runs for compare, history and report tests: Records written directly, samples chosen.

`write_run(root, cases)` writes a real run directory through the results store (run.json +
records.jsonl), so everything downstream reads it exactly as it reads a run of the harness.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from attnbench.cases import Budget, Case, MaskChoice, Pass, Shape
from attnbench.results.schema import Memory, Record, RunInfo, Status, SuiteInfo, Timing
from attnbench.results.store import LoadedRun, RunWriter, load_run

_counter = itertools.count()


def gpu_env(**changes: Any) -> dict[str, Any]:
    """An environment block like one from an H100 host (fields as measure.environment writes them)."""
    env = {
        "hostname": "gpu-node-1",
        "python": {"version": "3.11.9"},
        "cpu": {"model": "AMD EPYC 9654", "torch_threads": 8},
        "torch": {"version": "2.13.0+cu128", "cuda": "12.8", "cudnn": 91000},
        "triton": "3.5.0",
        "attnbench": {"version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False},
        "device": {"requested": "cuda", "name": "NVIDIA H100 80GB HBM3"},
        "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}],
        "device_count": 1,
        "driver_version": "570.86.15",
        "nvml": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "throttle_reasons": ["GpuIdle"]}],
    }
    for dotted, value in changes.items():
        node = env
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return env


def case(kernel: str = "flex", mask: str = "causal", seqlen: int = 8192, pass_: str = "forward",
         device: str = "cuda", **params) -> Case:
    return Case(
        kernel=kernel,
        mask=MaskChoice(name=mask, params=params),
        shape=Shape(batch=1, heads_q=8, heads_kv=1, head_dim=64, seqlen=seqlen),
        dtype="bfloat16" if device == "cuda" else "float32",
        pass_=Pass(pass_),
        device=device,
        budget=Budget(),
    )


def noisy_samples(median_s: float, n: int, rel_noise: float, rng: np.random.Generator) -> list[float]:
    """Log-normal samples around `median_s` (relative sigma `rel_noise`)."""
    return list(median_s * np.exp(rng.normal(0.0, rel_noise, n)))


@dataclass
class Spec:
    """One record to write: a case, a status and (for ok) samples."""

    case: Case
    status: Status = Status.ok
    samples: Optional[list[float]] = None
    reason: Optional[str] = None
    nvml: Optional[list[dict]] = None
    extra: dict = field(default_factory=dict)


def record_for(run_id: str, spec: Spec) -> Record:
    c = spec.case
    timing = memory = None
    tflops = flops = None
    if spec.samples:
        arr = np.asarray(spec.samples)
        timing = Timing(method="cuda_event" if c.device == "cuda" else "perf_counter", warmup=3,
                        repeats=len(arr), median_s=float(np.median(arr)), p20_s=float(np.percentile(arr, 20)),
                        p80_s=float(np.percentile(arr, 80)), samples_s=[float(x) for x in arr])
        flops = 4.0 * 8 * 64 * c.shape.seqlen ** 2 / 2
        tflops = flops / timing.median_s / 1e12
        memory = Memory(peak_bytes=c.shape.seqlen * 4096, method="cuda_max_memory_allocated")
    return Record(
        run_id=run_id, case_id=c.key_id(), key=c.key(), case=c, status=spec.status,
        reason=spec.reason if spec.reason or spec.status is Status.ok else f"{spec.status.value} happened",
        flops=flops, tflops=tflops, timing=timing, memory=memory, nvml=spec.nvml,
        started_at="2026-01-01T00:00:00+00:00", duration_s=0.1, **spec.extra,
    )


def write_run(root: Path, specs: list[Spec], env: Optional[dict] = None, *, suite: str = "synthetic",
              run_id: Optional[str] = None, started_at: Optional[str] = None):
    """Write a run directory under `root`; return the loaded run."""
    n = next(_counter)
    run_id = run_id or f"20260101-{n:06d}-synthetic"
    info = RunInfo(
        run_id=run_id, attnbench_version="0.1.0",
        suite=SuiteInfo(name=suite, sha256="0" * 64, document={"name": suite}),
        environment=env if env is not None else gpu_env(),
        started_at=started_at or f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
    )
    writer = RunWriter(Path(root), info)
    for spec in specs:
        writer.append(record_for(run_id, spec))
    writer.finish("complete")
    return load_run(writer.dir)


def make_run(specs: list[Spec], env: Optional[dict] = None, *, run_id: Optional[str] = None) -> LoadedRun:
    """The same run as `write_run`, in memory only (for statistics over many seeds)."""
    n = next(_counter)
    run_id = run_id or f"20260101-{n:06d}-memory"
    info = RunInfo(
        run_id=run_id, attnbench_version="0.1.0",
        suite=SuiteInfo(name="synthetic", sha256="0" * 64, document={}),
        environment=env if env is not None else gpu_env(),
        started_at="2026-01-01T00:00:00+00:00", state="complete",
    )
    return LoadedRun(Path(run_id), info, [record_for(run_id, s) for s in specs])
