"""Stand-in CP workers for the launcher tests: `run_rank(case)` variants run in every rank.

Each does a real all_reduce over the process group first (so the ranks really met), then
behaves as its name says. The launcher tests pass them as ``--worker tests.cp_standins:NAME``.
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist

from attnbench.cp.protocol import RankOutcome
from attnbench.results.schema import CommCount, CPResult, Status, Timing

VICTIM = 1  # the rank that misbehaves (the last rank when the world is smaller)


def _all_reduce() -> int:
    t = torch.ones(1) * (dist.get_rank() + 1)
    dist.all_reduce(t)
    return int(t.item())


def _victim() -> int:
    return min(VICTIM, dist.get_world_size() - 1)


def _outcome(total: int) -> RankOutcome:
    w = dist.get_world_size()
    times = [0.001 * (1 + r) for r in range(w)]
    mean = sum(times) / w
    return RankOutcome(
        status=Status.ok,
        reason=f"all_reduce sum {total}",
        flops=1e6,
        tflops=1e6 / (max(times) * w) / 1e12,
        timing=Timing(method="perf_counter", warmup=0, repeats=1, median_s=max(times), p20_s=max(times),
                      p80_s=max(times), samples_s=[max(times)]),
        cp=CPResult(
            world_size=w,
            backend=dist.get_backend(),
            rank_median_s=times,
            mean_s=mean,
            imbalance=max(times) / mean,
            rank_area=[100] * w,
            area_imbalance=1.0,
            comm={"forward": [CommCount(bytes_sent=4, calls=1)] * w},
            comm_expected={"forward": CommCount(bytes_sent=4, calls=1)},
            per_gpu_tflops=1e6 / (max(times) * w) / 1e12,
        ),
        detail=f"pid {os.getpid()} port {os.environ.get('MASTER_PORT')}",
    )


def ok(case):
    total = _all_reduce()
    expected = sum(range(1, dist.get_world_size() + 1))
    assert total == expected, (total, expected)
    return _outcome(total) if dist.get_rank() == 0 else None


def hang(case):
    """Every rank hangs after the all_reduce (rank 0 in a collective, the victim asleep)."""
    _all_reduce()
    print(f"rank {dist.get_rank()} about to hang", file=sys.stderr, flush=True)
    if dist.get_rank() == _victim() or dist.get_world_size() == 1:
        while True:
            time.sleep(1)
    _all_reduce()  # waits forever for the victim
    return None


def sleep(case):
    """Every rank sleeps after the all_reduce, outside any collective: only the case timeout ends it."""
    _all_reduce()
    print(f"rank {dist.get_rank()} going to sleep", file=sys.stderr, flush=True)
    while True:
        time.sleep(1)


def exit3(case):
    _all_reduce()
    if dist.get_rank() == _victim():
        print("victim: exiting with code 3", file=sys.stderr, flush=True)
        os._exit(3)
    _all_reduce()
    return _outcome(0) if dist.get_rank() == 0 else None


def abort(case):
    _all_reduce()
    if dist.get_rank() == _victim():
        print("victim: calling abort()", file=sys.stderr, flush=True)
        os.abort()
    _all_reduce()
    return _outcome(0) if dist.get_rank() == 0 else None


def raises(case):
    _all_reduce()
    if dist.get_rank() == _victim():
        raise ValueError("stand-in worker failed on purpose")
    _all_reduce()
    return _outcome(0) if dist.get_rank() == 0 else None


def spawns_child(case):
    """Starts a grandchild that would outlive the case, then hangs: the sweep must get both."""
    import subprocess

    _all_reduce()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print(f"rank {dist.get_rank()} grandchild {child.pid}", file=sys.stderr, flush=True)
    while True:
        time.sleep(1)


def by_mode(case):
    """The behaviour named by the case's CP parameter `mode` (default ok)."""
    mode = str(case.cp.params.get("mode", "ok"))
    return {"ok": ok, "hang": hang, "sleep": sleep, "exit3": exit3, "abort": abort, "raises": raises}[mode](case)
