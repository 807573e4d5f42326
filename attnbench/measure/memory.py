"""Peak memory of one call.

CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``) above the
allocation level before the call. CPU (Linux): the process's resident high-water mark
(``VmHWM``), reset just before the call by writing ``5`` to ``/proc/self/clear_refs``,
above the resident set before the call. Where the high-water mark cannot be reset the
method is ``"unavailable"`` and the peak ``None``; that is not an error.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from attnbench.measure.device import resolve_device

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_MEMINFO = "/proc/meminfo"


@dataclass
class MemoryResult:
    peak_bytes: int | None
    method: str  # "cuda_max_memory_allocated", "linux_vmhwm" or "unavailable"
    baseline_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_kb_field(path: str, key: str) -> int | None:
    """``key:   1234 kB`` from a /proc file, in bytes; None when unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    parts = line.split()
                    value = int(parts[1])
                    unit = parts[2].lower() if len(parts) > 2 else "b"
                    return value * 1024 if unit == "kb" else value
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process (Linux ``VmRSS``), or None."""
    return _read_kb_field(_STATUS, "VmRSS")


def _hwm_bytes() -> int | None:
    return _read_kb_field(_STATUS, "VmHWM")


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_memory_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory a new allocation could still get: ``MemAvailable`` (CPU) or free device memory (CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(dev if dev.index is not None else None)
        return int(free)
    return _read_kb_field(_MEMINFO, "MemAvailable")


def measure_peak_memory(fn: Callable[[], Any], *, device: str | torch.device) -> MemoryResult:
    """Run ``fn()`` once and report the peak memory it added above the level before it."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        baseline = int(torch.cuda.memory_allocated(dev))
        torch.cuda.reset_peak_memory_stats(dev)
        result = fn()
        torch.cuda.synchronize(dev)
        peak = int(torch.cuda.max_memory_allocated(dev)) - baseline
        del result
        return MemoryResult(peak_bytes=max(0, peak), method="cuda_max_memory_allocated", baseline_bytes=baseline)

    gc.collect()
    baseline = rss_bytes()
    if baseline is None or not _reset_hwm():
        fn()
        return MemoryResult(peak_bytes=None, method="unavailable", baseline_bytes=baseline)
    result = fn()
    hwm = _hwm_bytes()
    del result
    if hwm is None:
        return MemoryResult(peak_bytes=None, method="unavailable", baseline_bytes=baseline)
    return MemoryResult(peak_bytes=max(0, hwm - baseline), method="linux_vmhwm", baseline_bytes=baseline)
