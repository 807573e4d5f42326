"""What a result was measured on: host, software versions, devices, NVML clocks.

Everything returned is JSON-serialisable. Missing pieces (no GPU, no NVML, no git, no
triton) are recorded as None or ``{"available": False, "reason": ...}``; they are
normal, never errors, and nothing here prints a traceback.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

GIT_TIMEOUT_S = 5.0
ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_CUDNN_V8_API_ENABLED",
)


def _safe(fn, default=None):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - environment capture must never fail
        return default


# --- NVML -----------------------------------------------------------------------------


def _reason_names(pynvml) -> list[tuple[int, str]]:
    """(bit, name) for every clock event / throttle reason constant pynvml defines."""
    by_bit: dict[int, str] = {}
    # Newer name first so it wins for bits both prefixes define.
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        for attr in dir(pynvml):
            if not attr.startswith(prefix):
                continue
            short = attr[len(prefix):]
            if short in ("All", "None", "Unknown"):
                continue
            value = getattr(pynvml, attr)
            if isinstance(value, int) and value > 0 and value & (value - 1) == 0:
                by_bit.setdefault(value, short)
    return sorted(by_bit.items())


def decode_throttle_reasons(mask: int, pynvml=None) -> list[str]:
    """Names of the bits set in an NVML clock event (throttle) reason bitmask."""
    if pynvml is None:
        import pynvml  # noqa: PLC0415
    names = [name for bit, name in _reason_names(pynvml) if mask & bit]
    known = 0
    for bit, _ in _reason_names(pynvml):
        known |= bit
    if mask & ~known:
        names.append(f"unknown(0x{mask & ~known:x})")
    return names


def _nvml_device(pynvml, i: int) -> dict[str, Any]:
    h = pynvml.nvmlDeviceGetHandleByIndex(i)

    def s(x):
        return x.decode() if isinstance(x, bytes) else x

    def clock(fn, kind):
        return _safe(lambda: int(fn(h, kind)))

    def reasons():
        get = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons"
        )
        return decode_throttle_reasons(int(get(h)), pynvml)

    return {
        "index": i,
        "name": _safe(lambda: s(pynvml.nvmlDeviceGetName(h))),
        "uuid": _safe(lambda: s(pynvml.nvmlDeviceGetUUID(h))),
        "clocks_mhz": {
            "sm": clock(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            "mem": clock(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            "sm_max": clock(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
            "mem_max": clock(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        },
        "power_limit_w": _safe(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
        "power_draw_w": _safe(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
        "temperature_c": _safe(lambda: int(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))),
        "throttle_reasons": _safe(reasons),
        "persistence_mode": _safe(lambda: bool(pynvml.nvmlDeviceGetPersistenceMode(h))),
    }


def _nvml_query() -> tuple[list[dict] | None, str | None, str | None]:
    """(per-GPU snapshot, driver version, reason when unavailable)."""
    try:
        import pynvml  # noqa: PLC0415 - provided by nvidia-ml-py
    except Exception as exc:  # noqa: BLE001
        return None, None, f"pynvml not importable: {exc}"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver / no GPU is normal on CPU hosts
        return None, None, f"nvmlInit failed: {exc}"
    try:
        driver = _safe(lambda: pynvml.nvmlSystemGetDriverVersion())
        if isinstance(driver, bytes):
            driver = driver.decode()
        count = int(pynvml.nvmlDeviceGetCount())
        gpus = []
        for i in range(count):
            try:
                gpus.append(_nvml_device(pynvml, i))
            except Exception as exc:  # noqa: BLE001
                gpus.append({"index": i, "error": str(exc)})
        return gpus, driver, None
    except Exception as exc:  # noqa: BLE001
        return None, None, f"NVML query failed: {exc}"
    finally:
        _safe(pynvml.nvmlShutdown)


def nvml_snapshot() -> list[dict] | None:
    """Per GPU (NVML index order, which may differ from CUDA's): clocks, power limit,
    temperature and throttle reasons; None when NVML is not available."""
    gpus, _driver, _reason = _nvml_query()
    return gpus


# --- host and software --------------------------------------------------------------


def _cpuinfo() -> dict[str, Any]:
    model = None
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key == "model name" and model is None:
                    model = value
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key:  # blank line ends one processor block
                    if core is not None:
                        cores.add((phys or "0", core))
                    phys = core = None
            if core is not None:
                cores.add((phys or "0", core))
    except OSError:
        pass
    return {
        "model": model or platform.processor() or None,
        "machine": platform.machine(),
        "physical_cores": len(cores) or None,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": _safe(lambda: len(os.sched_getaffinity(0))),
        "torch_threads": _safe(torch.get_num_threads),
    }


def _memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _safe(lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001
            continue
    return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout


def git_info(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding ``path`` (default: the attnbench package)."""
    if path is None:
        path = Path(__file__).resolve().parent.parent
    head = _git(["rev-parse", "HEAD"], path)
    commit = head.strip() if head and head.strip() else None
    dirty = None
    if commit is not None:
        status = _git(["status", "--porcelain"], path)
        dirty = None if status is None else bool(status.strip())
    return {"git_commit": commit, "git_dirty": dirty}


def _torch_info() -> dict[str, Any]:
    return {
        "version": torch.__version__,
        "debug": _safe(lambda: bool(torch.version.debug)),
        "cuda": _safe(lambda: torch.version.cuda),
        "hip": _safe(lambda: getattr(torch.version, "hip", None)),
        "cudnn": _safe(lambda: torch.backends.cudnn.version()),
        "git_version": _safe(lambda: torch.version.git_version),
        "tf32_matmul": _safe(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
        "tf32_cudnn": _safe(lambda: bool(torch.backends.cudnn.allow_tf32)),
    }


def _cuda_devices() -> list[dict[str, Any]]:
    if not _safe(torch.cuda.is_available, False):
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = _safe(lambda i=i: torch.cuda.get_device_properties(i))
        if p is None:
            out.append({"index": i})
            continue
        out.append(
            {
                "index": i,
                "name": p.name,
                "total_memory_bytes": int(p.total_memory),
                "capability": f"{p.major}.{p.minor}",
                "multiprocessor_count": int(p.multi_processor_count),
                "l2_cache_bytes": _safe(lambda p=p: int(p.L2_cache_size)),
            }
        )
    return out


def capture_environment(device: str = "cpu") -> dict[str, Any]:
    """JSON-serialisable description of the host, software and devices."""
    import numpy

    import attnbench

    devices = _cuda_devices()
    gpus, driver, reason = _nvml_query()
    nvml: Any = gpus if gpus is not None else {"available": False, "reason": reason}
    dev_name = None
    try:
        from attnbench.measure.device import device_name

        dev_name = device_name(device)
    except Exception:  # noqa: BLE001
        dev_name = None

    return {
        "hostname": _safe(socket.gethostname),
        "captured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "cpu": _cpuinfo(),
        "memory_total_bytes": _memory_total_bytes(),
        "torch": _torch_info(),
        "triton": _dist_version("triton", "pytorch-triton", "triton-nightly"),
        "numpy": numpy.__version__,
        "attnbench": {"version": getattr(attnbench, "__version__", None), **git_info()},
        "device": {"requested": str(device), "name": dev_name},
        "devices": devices,
        "device_count": len(devices),
        "driver_version": driver,
        "nvml": nvml,
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
