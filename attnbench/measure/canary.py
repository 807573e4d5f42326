"""The canary: a small fixed workload timed right before and right after every visit of a case.

Its time moves with the machine, not with the code under test: a busy neighbour (another
job on the cores, another process on the GPU), throttled clocks or a slower node make it
slower. `attnbench compare` uses it twice (attnbench.compare.canary): a visit measured while
the canary was slower than the run's usual by more than the threshold makes a case `noisy`
rather than `regressed`, and the ratio of two runs' canary medians is the machine-wide drift
between them (`--normalise-drift` divides it out).

The workload is fixed per device type and named (:data:`WORKLOADS`): two runs' canaries are
compared only when they ran the same one. It is a chain of square matmuls on inputs made from
a fixed seed, timed with the case's own clock (CUDA events on a GPU, perf_counter on a CPU),
:data:`SAMPLES` samples per probe, sized to cost well under a millisecond per sample where
it runs (measured cost: benchmarks/compare.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: samples per probe (a probe before and one after each visit)
SAMPLES = 5


@dataclass(frozen=True)
class CanaryWorkload:
    """A chain of `chain` matmuls of `size` x `size` in `dtype`; `name` identifies it in records."""

    name: str
    size: int
    chain: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


WORKLOADS = {
    # one CPU thread: about 0.1 ms a sample (0.65 ms a probe) on a 2-core Xeon VM
    "cpu": CanaryWorkload("matmul-96x8-float32", size=96, chain=8, dtype="float32"),
    # about 0.2 ms a sample on an H100 (4 x 69 GFLOP of bf16 at ~700 TFLOPs/s dense); not measured yet
    "cuda": CanaryWorkload("matmul-4096x4-bfloat16", size=4096, chain=4, dtype="bfloat16"),
}


def workload_for(device: str) -> CanaryWorkload:
    return WORKLOADS["cuda" if str(device).startswith("cuda") else "cpu"]


class Canary:
    """The canary of one process on one device: inputs made once, then timed on request."""

    def __init__(self, device: str) -> None:
        import torch

        from attnbench.cases import torch_dtype
        from attnbench.measure.device import resolve_device

        self.workload = workload_for(device)
        self.device = str(device)
        dev = resolve_device(device)
        generator = torch.Generator(device="cpu").manual_seed(0)
        n, dtype = self.workload.size, torch_dtype(self.workload.dtype)
        self._a = (torch.randn(n, n, generator=generator) / n**0.5).to(device=dev, dtype=dtype)
        self._b = (torch.randn(n, n, generator=generator) / n**0.5).to(device=dev, dtype=dtype)
        self._out = torch.empty_like(self._a)

    def _chain(self) -> Any:
        import torch

        x = self._a
        for _ in range(self.workload.chain):
            torch.matmul(x, self._b, out=self._out)
            x = self._out
        return None

    def probe(self, samples: int = SAMPLES) -> list[float]:
        """`samples` timed runs of the workload, in seconds (one untimed run first)."""
        from attnbench.cases import Budget
        from attnbench.measure.timing import Iterations, time_fn

        import torch

        with torch.no_grad():
            timed = time_fn(self._chain, device=self.device, budget=Budget(), flush_l2=False,
                            iterations=Iterations(warmup=0, repeats=samples))
        return [float(t) for t in timed.times_s]
