"""A tiny multi-process harness for CP tests: W gloo ranks on this machine run a list of
cases through ``attnbench.cp.worker.run_rank`` (one process group for many cases, since
starting one costs seconds). Cases whose timing the tests do not read run with
``timed=False`` (checks only). The real launcher (torchrun machinery) is elsewhere."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from attnbench.cases import Case


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, cases_json: list[str], timed: list[bool], out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from attnbench.cp.worker import run_rank

    results = []
    try:
        for blob, with_timing in zip(cases_json, timed):
            case = Case.model_validate_json(blob)
            try:
                outcome = run_rank(case, timed=with_timing)
                results.append(None if outcome is None else outcome.model_dump(mode="json"))
            except Exception:  # a broken case must not hide the others; the test sees the trace
                results.append({"status": "error", "detail": traceback.format_exc()})
                raise
    finally:
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(results, f)
        dist.destroy_process_group()


def run_cases(cases: list[Case], world: int, timed: list[bool] | None = None) -> list[dict]:
    """Outcomes (rank 0's RankOutcome as JSON dicts), one per case, in order; ``timed[i]``
    False runs case i without its timing and memory steps."""
    blobs = [c.model_dump_json(by_alias=True) for c in cases]
    timed = [True] * len(cases) if timed is None else list(timed)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "outcomes.json")
        mp.spawn(_rank_main, args=(world, free_port(), blobs, timed, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)
