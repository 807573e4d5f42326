"""Which differences between two runs' environments make their timings incomparable.

Only what changes the speed of the same code counts: the device model, the GPU driver,
torch, triton and CUDA. Everything else (host name, Python, attnbench's own commit, the
time) is expected to differ between a baseline and a candidate and is reported, not
enforced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

# Reasons NVML reports that are not a slowdown: an idle GPU (the snapshot is taken between
# kernels), clocks set on purpose (application clocks, locked clocks), the display.
BENIGN_THROTTLE = frozenset({"GpuIdle", "ApplicationsClocksSetting", "DisplayClockSetting"})


def _get(env: dict, *path: str) -> Any:
    value: Any = env
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def device_model(env: dict, device: str = "cuda") -> Optional[str]:
    """The model of the device the cases ran on: GPU names for CUDA, the CPU model otherwise."""
    if device.startswith("cuda"):
        names = [d.get("name") for d in env.get("devices") or [] if isinstance(d, dict) and d.get("name")]
        if names:
            return ", ".join(sorted(set(names))) + (f" x{len(names)}" if len(names) > 1 else "")
    name = _get(env, "device", "name")
    if name:
        return str(name)
    return _get(env, "cpu", "model")


# field name, getter(env, device) -> value, applies to CPU cases too
FIELDS: tuple[tuple[str, Callable[[dict, str], Any], bool], ...] = (
    ("device", lambda env, dev: device_model(env, dev), True),
    ("driver", lambda env, dev: env.get("driver_version"), False),
    ("torch", lambda env, dev: _get(env, "torch", "version"), True),
    ("triton", lambda env, dev: env.get("triton"), True),
    ("cuda", lambda env, dev: _get(env, "torch", "cuda"), False),
)

INFORMATIONAL: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("hostname", lambda env: env.get("hostname")),
    ("python", lambda env: _get(env, "python", "version")),
    ("cudnn", lambda env: _get(env, "torch", "cudnn")),
    ("attnbench commit", lambda env: _get(env, "attnbench", "git_commit")),
    ("torch threads", lambda env: _get(env, "cpu", "torch_threads")),
)


@dataclass(frozen=True)
class EnvDifference:
    field: str
    base: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.field} differs: {self.base} -> {self.current}"


def env_differences(base: dict, current: dict, device: str = "cuda") -> list[EnvDifference]:
    """The differences that matter for cases on ``device`` ("cpu" skips driver and CUDA)."""
    on_gpu = device.startswith("cuda")
    out = []
    for name, getter, for_cpu in FIELDS:
        if not on_gpu and not for_cpu:
            continue
        a, b = getter(base or {}, device), getter(current or {}, device)
        if a != b:
            out.append(EnvDifference(name, a, b))
    return out


def informational_differences(base: dict, current: dict) -> list[EnvDifference]:
    out = []
    for name, getter in INFORMATIONAL:
        a, b = getter(base or {}), getter(current or {})
        if a != b:
            out.append(EnvDifference(name, a, b))
    return out


def throttle_reasons(nvml: Any) -> list[str]:
    """Non-benign NVML clock event reasons in a snapshot (a list of per-GPU dicts), deduplicated."""
    if not isinstance(nvml, list):
        return []
    found: list[str] = []
    for gpu in nvml:
        if not isinstance(gpu, dict):
            continue
        for reason in gpu.get("throttle_reasons") or []:
            if reason not in BENIGN_THROTTLE and reason not in found:
                found.append(str(reason))
    return found
