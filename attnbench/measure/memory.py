"""Peak memory of one call, measured so that the code being measured cannot fake it.

A kernel runs inside the process it is measured in, so whatever that process keeps about
itself it can reset: ``/proc/self/clear_refs`` resets the resident high-water mark
(``VmHWM``), ``torch.cuda.reset_peak_memory_stats`` the allocator's peak. The figure is
therefore made by a :class:`ProcessWatch`, which can run in another process (the runner's
main process watches its worker) and looks at what the kernel cannot hide:

- CPU (Linux): the watched process's resident set (``/proc/<pid>/status`` ``VmRSS``),
  sampled every millisecond by a thread during the call, and its ``VmHWM`` (reset through
  ``/proc/<pid>/clear_refs`` just before the call) read after it. The peak is the larger of
  the two. ``VmHWM`` can never legitimately be below a resident size sampled since its
  reset, so when it is, the code reset it (``hwm_reset``: the runner marks the case
  invalid). What could still escape: memory touched and released between two samples,
  a few MB at memory bandwidth.
- CUDA: the caching allocator's peak (``max_memory_allocated``) as before, and the
  device's used memory as NVML reports it, sampled the same way after the allocator's
  cache was emptied, so that new allocations show up there; the figure is the larger of
  the two. A kernel that resets the allocator's counters is still seen through NVML (which
  also counts memory allocated outside torch's allocator, at segment granularity).

Memory a kernel allocates in ``prepare`` and keeps is part of its peak (it is memory the
attention needs: a precomputed dense mask or workspace is not free): :func:`prepare_watched`
runs ``prepare`` between ``mark()`` and ``after_prepare()``, and ``held_bytes`` says how much
of the peak that is. On CPU what ``prepare`` added to the resident set is added to the call's
peak above the level right before the call; the first call and the timing loop in between
are left out, since the resident set cannot tell a kernel's cache from compilation or the
heap's growth (so a workspace a kernel allocates on its first call and keeps is not seen
there). On CUDA the allocator counts from before ``prepare``, which includes such a cache.
Where nothing can be read the method is ``"unavailable"`` and the peak ``None``.
"""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Protocol

import torch

from attnbench.measure.device import resolve_device

_MEMINFO = "/proc/meminfo"
#: how often a watch samples during the measured call
SAMPLE_INTERVAL_S = 0.001
#: VmHWM below the largest sampled VmRSS by more than this means it was reset (RSS counters
#: are per-CPU batched, so the two can disagree by a few pages)
HWM_SLACK_BYTES = 4 * 1024 * 1024

METHOD_RSS = "linux_vmhwm_rss_sampled"
METHOD_NVML = "nvml_used_sampled"
METHOD_ALLOCATOR = "cuda_max_memory_allocated"
METHOD_UNAVAILABLE = "unavailable"


@dataclass
class MemoryResult:
    peak_bytes: int | None
    method: str  # METHOD_* above, joined with "+" when two views are combined
    baseline_bytes: int | None  # the level the peak counts from (the mark, else the start of the call)
    held_bytes: int | None = None  # of the peak: already held when the call started (since the mark)
    hwm_reset: bool = False  # the high-water mark was reset during the call: the figure is a lower bound
    watched_by: str = "this process"  # "this process" or "the main process"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WatchView:
    """What a watch saw of one call (bytes, all above the watch's origin)."""

    method: str
    peak_bytes: int | None
    held_bytes: int | None
    baseline_bytes: int | None
    hwm_reset: bool = False
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryWatch(Protocol):
    """mark() and after_prepare() around the kernel's prepare (optional), begin() right before
    the measured call, end() right after it."""

    watched_by: str

    def mark(self) -> None: ...

    def after_prepare(self) -> None: ...

    def begin(self) -> None: ...

    def end(self) -> WatchView: ...


# -- /proc of any process ---------------------------------------------------------------------
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


def rss_bytes(pid: int | None = None) -> int | None:
    """Current resident set size of a process (Linux ``VmRSS``; default this one), or None."""
    return _read_kb_field(f"/proc/{pid or 'self'}/status", "VmRSS")


def hwm_bytes(pid: int | None = None) -> int | None:
    """Resident high-water mark of a process (Linux ``VmHWM``), or None."""
    return _read_kb_field(f"/proc/{pid or 'self'}/status", "VmHWM")


def reset_hwm(pid: int | None = None) -> bool:
    """Reset a process's ``VmHWM`` to its current RSS (writable by the same user)."""
    try:
        with open(f"/proc/{pid or 'self'}/clear_refs", "w") as f:
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


# -- NVML (usable from a process that never touches CUDA) ----------------------------------
def nvml_used_reader(uuid: str) -> Callable[[], int | None] | None:
    """A function returning the used memory of the GPU with this UUID, through NVML; None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = None
        for candidate in (uuid, uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(candidate)
                break
            except pynvml.NVMLError:
                continue
        if handle is None:
            return None
    except Exception:  # no driver, no library: the allocator's view alone
        return None

    def used() -> int | None:
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:
            return None

    return used


def cuda_device_uuid(device: str | torch.device) -> str | None:
    """The UUID of a CUDA device as NVML names it, so that another process can watch it."""
    try:
        return str(torch.cuda.get_device_properties(resolve_device(device)).uuid)
    except Exception:
        return None


# -- the watch ------------------------------------------------------------------------------
class _Sampler:
    """Reads a level (bytes) every SAMPLE_INTERVAL_S in a thread and keeps the largest."""

    def __init__(self, read: Callable[[], int | None], interval: float = SAMPLE_INTERVAL_S) -> None:
        self.read, self.interval = read, interval
        self.largest: int | None = None
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="attnbench-memory-watch", daemon=True)

    def _take(self) -> None:
        value = self.read()
        if value is not None:
            self.count += 1
            self.largest = value if self.largest is None else max(self.largest, value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def start(self) -> None:
        self._take()
        self._thread.start()

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join()
        self._take()
        return self.largest


class ProcessWatch:
    """Watches one process's memory (CPU: its resident set; CUDA: the GPU's used memory via NVML).

    Works from any process: the runner's main process watches its worker, so the kernel
    running in the worker has no handle on the figure.
    """

    def __init__(self, pid: int | None = None, *, device: str = "cpu", gpu_uuid: str | None = None,
                 watched_by: str = "this process") -> None:
        self.pid = pid or os.getpid()
        self.cuda = device.startswith("cuda")
        self.watched_by = watched_by
        self._level: Callable[[], int | None]
        if self.cuda:
            reader = nvml_used_reader(gpu_uuid) if gpu_uuid else None
            self._level = reader or (lambda: None)
        else:
            self._level = lambda: rss_bytes(self.pid)
        self._marked_at: int | None = None
        self._prepared = 0
        self._begin: int | None = None
        self._hwm_ok = False
        self._sampler: _Sampler | None = None

    def mark(self) -> None:
        self._marked_at = self._level()

    def after_prepare(self) -> None:
        level = self._level()
        if level is not None and self._marked_at is not None:
            self._prepared = max(0, level - self._marked_at)

    def begin(self) -> None:
        self._hwm_ok = (not self.cuda) and reset_hwm(self.pid)
        self._begin = self._level()
        self._sampler = _Sampler(self._level)
        self._sampler.start()

    def end(self) -> WatchView:
        sampler, self._sampler = self._sampler, None
        largest = sampler.stop() if sampler is not None else None
        count = sampler.count if sampler is not None else 0
        hwm = hwm_bytes(self.pid) if self._hwm_ok else None
        begin, prepared = self._begin, self._prepared
        self._marked_at, self._prepared = None, 0
        if largest is None or begin is None:
            return WatchView(method=METHOD_UNAVAILABLE, peak_bytes=None, held_bytes=None, baseline_bytes=begin)
        reset = hwm is not None and hwm + HWM_SLACK_BYTES < largest
        top = max(largest, hwm or 0)
        return WatchView(
            method=METHOD_NVML if self.cuda else METHOD_RSS,
            peak_bytes=prepared + max(0, top - begin),
            held_bytes=prepared,
            baseline_bytes=begin,
            hwm_reset=reset,
            samples=count,
        )


def local_watch(device: str | torch.device) -> ProcessWatch:
    """A watch of this process, from a thread in it (inline runs, CP ranks)."""
    dev = resolve_device(device)
    uuid = cuda_device_uuid(dev) if dev.type == "cuda" else None
    return ProcessWatch(os.getpid(), device=dev.type, gpu_uuid=uuid)


@dataclass
class MemoryMark:
    """The allocator's level before the kernel's prepare (CUDA), where its peak counts from."""

    allocator_bytes: int | None


def prepare_watched(prepare: Callable[[], Any], *, watch: MemoryWatch, device: str | torch.device) -> tuple[Any, MemoryMark]:
    """Run a kernel's ``prepare()``, noting what it allocates and keeps: that counts in its peak."""
    dev = resolve_device(device)
    allocated = None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        allocated = int(torch.cuda.memory_allocated(dev))
    watch.mark()
    prepared = prepare()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    watch.after_prepare()
    return prepared, MemoryMark(allocator_bytes=allocated)


def measure_peak_memory(fn: Callable[[], Any], *, device: str | torch.device, watch: Optional[MemoryWatch] = None,
                        mark: MemoryMark | None = None) -> MemoryResult:
    """Run ``fn()`` once and report its peak memory above the level before it, plus what the
    kernel's prepare keeps (see :func:`prepare_watched`; ``mark`` is what it returned)."""
    dev = resolve_device(device)
    watch = watch if watch is not None else local_watch(dev)
    gc.collect()
    if dev.type == "cuda":
        return _measure_cuda(fn, dev, watch, mark)
    watch.begin()
    try:
        result = fn()
    finally:
        view = watch.end()
    del result
    return MemoryResult(peak_bytes=view.peak_bytes, method=view.method, baseline_bytes=view.baseline_bytes,
                        held_bytes=view.held_bytes, hwm_reset=view.hwm_reset, watched_by=watch.watched_by)


def _measure_cuda(fn, dev: torch.device, watch: MemoryWatch, mark: MemoryMark | None) -> MemoryResult:
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()  # new allocations must reach the driver, where NVML sees them
    start = int(torch.cuda.memory_allocated(dev))
    origin = mark.allocator_bytes if mark is not None and mark.allocator_bytes is not None else start
    torch.cuda.reset_peak_memory_stats(dev)
    watch.begin()
    try:
        result = fn()
        torch.cuda.synchronize(dev)
    finally:
        view = watch.end()
    allocator_peak = max(0, int(torch.cuda.max_memory_allocated(dev)) - origin)
    del result
    peaks = [allocator_peak] + ([view.peak_bytes] if view.peak_bytes is not None else [])
    method = METHOD_ALLOCATOR if view.peak_bytes is None else f"{METHOD_ALLOCATOR}+{METHOD_NVML}"
    return MemoryResult(peak_bytes=max(peaks), method=method, baseline_bytes=origin,
                        held_bytes=max(0, start - origin), watched_by=watch.watched_by)
