"""How many threads torch's CPU operators use during a run: chosen once, pinned, recorded.

Why one thread by default on CPU: every CPU operator is an OpenMP parallel region that
ends in a barrier, so with two threads on two cores a 0.2 ms kernel takes as long as the
slower thread. When anything else runs on one of the cores (another job, a CI neighbour),
the second thread waits for a scheduler time slice, and samples of 0.2 ms become 8, 12,
24, 100+ ms (measured: benchmarks/threads.md). One thread never waits for another, which is
why ``torch.utils.benchmark.Timer`` also defaults to one. More threads (``--threads``) suit
an otherwise idle machine. On a CUDA run the CPU only feeds the GPU and makes the inputs:
torch's own default (the physical cores) is kept, and pinned so that every process uses it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

#: the most threads --threads accepts (more than any machine the tool runs on has cores)
MAX_THREADS = 1024


@dataclass(frozen=True)
class ThreadChoice:
    count: int
    source: str  # why this count: "--threads", "OMP_NUM_THREADS", or the default's reason

    def to_dict(self) -> dict:
        return asdict(self)


def choose_threads(requested: Optional[int], device: str) -> ThreadChoice:
    """--threads, else OMP_NUM_THREADS, else 1 on CPU and torch's default on CUDA."""
    if requested is not None:
        return ThreadChoice(int(requested), "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and 1 <= int(env) <= MAX_THREADS:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    if device.startswith("cuda"):
        import torch

        return ThreadChoice(torch.get_num_threads(), "torch's default (a CUDA run: CPU threads only feed the GPU)")
    return ThreadChoice(1, "default for CPU runs: one thread, not held up by other processes (--threads N for more)")


@contextmanager
def pinned_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
