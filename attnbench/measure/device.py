"""Calibration of the device: matmul rate per dtype and the peak TFLOPs/s.

The matmul rate predicts how long a case will take; the peak rejects impossible
results (useful FLOPs above the device's peak mean the record is wrong, not fast).

Peak: NVIDIA GPUs found in :data:`PEAK_TABLE` use the dense (no sparsity) tensor-core
numbers of NVIDIA's data sheets, float32 counted as TF32 (a kernel may run float32 on
TF32 tensor cores). Anything else (unknown GPU, CPU) uses, per dtype, twice the best matmul
rate measured in that dtype or in one a kernel may upcast it to (:data:`UPCASTS`: a half
precision kernel may compute in float32, which on a CPU is often faster). Never a rate of a
narrower dtype: on a CPU with bf16 matrix units a bf16 matmul runs 10x faster than a
float32 one, and a float32 kernel claiming that speed is wrong.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch

from attnbench.cases import canonical_dtype, torch_dtype

# (regex on the upper-cased device name, dense TFLOPs/s by dtype). First match wins, so
# more specific names come first. Source: NVIDIA data sheets (dense, without sparsity).
PEAK_TABLE: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H100\s*PCIE", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}),
    (r"GH200", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}),
    (r"H200", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}),
    (r"H100", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}),  # SXM
    (r"A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    (r"L40S", {"bfloat16": 362.05, "float16": 362.05, "float32": 183.0}),
    (r"\bL4\b", {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0}),
    (r"\bA10\b", {"bfloat16": 125.0, "float16": 125.0, "float32": 62.5}),
)
#: dtype -> the wider dtypes a kernel may compute it in internally (for the measured peak)
UPCASTS: dict[str, tuple[str, ...]] = {"float16": ("float32",), "bfloat16": ("float32",), "float32": ()}
SPEC_SOURCE = "spec sheet"
MEASURED_SOURCE = "2x measured matmul"

_CACHE: dict[tuple, "DeviceCalibration"] = {}


@dataclass
class DeviceCalibration:
    device: str
    name: str
    matmul_tflops: dict[str, float]
    peak_tflops: dict[str, float]
    peak_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def peak_for(self, dtype: str) -> float | None:
        """Peak for ``dtype``, or the largest known peak when that dtype was not calibrated."""
        dtype = canonical_dtype(dtype)
        if dtype in self.peak_tflops:
            return self.peak_tflops[dtype]
        return max(self.peak_tflops.values()) if self.peak_tflops else None


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device with an explicit CUDA index; CUDA asked for but absent raises."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str | torch.device) -> str:
    """Marketing name of the device: the GPU's name, or the CPU model."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available")
        return torch.cuda.get_device_name(dev)
    return _cpu_model()


def spec_peak(name: str) -> dict[str, float] | None:
    """Dense tensor-core peaks for an NVIDIA device name, or None when not in the table."""
    upper = name.upper()
    for pattern, peaks in PEAK_TABLE:
        if re.search(pattern, upper):
            return dict(peaks)
    return None


def _matmul_tflops(dev: torch.device, dtype: torch.dtype, n_target: int, seconds: float) -> float | None:
    """Best observed rate of an n x n matmul, time-boxed to roughly ``seconds``."""
    is_cuda = dev.type == "cuda"

    def sync():
        if is_cuda:
            torch.cuda.synchronize(dev)

    def timed(a, b, out) -> float:
        sync()
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync()
        return time.perf_counter() - t0

    # Start small and grow towards n_target only while one matmul stays well inside the box
    # (float16 on a CPU can be a hundred times slower than float32).
    n = min(256, n_target)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    timed(a, b, out)  # warm-up: library initialisation
    t = timed(a, b, out)
    while n < n_target:
        nn = min(n_target, n * 2)
        # Decide on the measured time, not a cubic extrapolation: small matmuls can be far
        # less efficient than large ones (on a 2-core EPYC, n=256 ran 30x below n=1024).
        if t > seconds / 4:
            break
        try:
            a2 = torch.randn(nn, nn, device=dev).to(dtype)
            b2 = torch.randn(nn, nn, device=dev).to(dtype)
            out2 = torch.empty(nn, nn, device=dev, dtype=dtype)
        except torch.cuda.OutOfMemoryError:
            break
        a, b, out, n = a2, b2, out2, nn
        timed(a, b, out)  # warm-up at this size
        t = timed(a, b, out)

    best = t
    deadline = time.perf_counter() + seconds
    for _ in range(50):
        best = min(best, timed(a, b, out))
        if time.perf_counter() >= deadline:
            break
    if best <= 0:
        return None
    return 2.0 * n**3 / best / 1e12


def measured_peaks(rates: dict[str, float], dtypes: Iterable[str]) -> dict[str, float]:
    """Per dtype: twice the best measured matmul rate of the dtype or of its :data:`UPCASTS`
    (the best of all dtypes where none of those was measured, so there is always a bound)."""
    out = {}
    for dtype in dtypes:
        own = [rates[d] for d in (dtype, *UPCASTS.get(dtype, ())) if rates.get(d)]
        out[dtype] = 2.0 * max(own or rates.values())
    return out


def calibrate_device(
    device: str | torch.device,
    dtypes: Iterable[str] = ("float32", "float16", "bfloat16"),
    seconds_per_dtype: float = 0.2,
) -> DeviceCalibration:
    """Matmul rate per dtype and peak TFLOPs/s of ``device`` (cached per process and CPU thread count)."""
    dev = resolve_device(device)
    names = tuple(canonical_dtype(d) for d in dtypes)
    key = (str(dev), names, float(seconds_per_dtype), torch.get_num_threads())
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available")

    n_target = 8192 if dev.type == "cuda" else 1024
    rates: dict[str, float] = {}
    for name in names:
        try:
            if dev.type == "cuda":
                with torch.cuda.device(dev):
                    rate = _matmul_tflops(dev, torch_dtype(name), n_target, seconds_per_dtype)
            else:
                rate = _matmul_tflops(dev, torch_dtype(name), n_target, seconds_per_dtype)
        except (RuntimeError, TypeError, NotImplementedError):
            rate = None  # dtype not supported by this device's matmul
        if rate is not None and rate > 0:
            rates[name] = rate
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    name = device_name(dev)
    table = spec_peak(name) if dev.type == "cuda" else None
    if table is not None:
        top = max(table.values())
        peak = {d: table.get(d, top) for d in names} or table
        source = SPEC_SOURCE
    elif rates:
        peak = measured_peaks(rates, names)
        source = MEASURED_SOURCE
    else:
        peak, source = {}, "unavailable"

    cal = DeviceCalibration(device=str(dev), name=name, matmul_tflops=rates, peak_tflops=peak, peak_source=source)
    _CACHE[key] = cal
    return cal


def remeasured_peak(device: str | torch.device, dtype: str, seconds: float = 0.5) -> float | None:
    """The measured peak of ``dtype`` (see :func:`measured_peaks`) from a fresh, longer matmul
    calibration; None where the device has a spec-sheet peak or nothing could be measured.

    A calibration taken while the machine was busy reads low (on a shared 2-core CPU the same
    float32 matmul measured 0.05 to 0.32 TFLOPs/s within an hour); before a result is called
    faster than the device can go, the device is measured again."""
    dev = resolve_device(device)
    if dev.type == "cuda" and spec_peak(device_name(dev)) is not None:
        return None
    dtype = canonical_dtype(dtype)
    rates = {}
    for name in (dtype, *UPCASTS.get(dtype, ())):
        try:
            rate = _matmul_tflops(dev, torch_dtype(name), 8192 if dev.type == "cuda" else 1024, seconds)
        except (RuntimeError, TypeError, NotImplementedError):
            rate = None
        if rate:
            rates[name] = rate
    return measured_peaks(rates, (dtype,))[dtype] if rates else None


def checked_peak(peaks: dict[str, float], device: str | torch.device, dtype: str, rate: float | None) -> float | None:
    """The peak of ``dtype`` in ``peaks``; where ``rate`` is above it, the device is measured
    again first (:func:`remeasured_peak`) and the higher peak kept in ``peaks`` for the rest of
    the run, so only a rate above both is called impossible."""
    peak = peaks.get(dtype)
    if rate is not None and peak is not None and rate > peak:
        peak = peaks[dtype] = max(peak, remeasured_peak(device, dtype) or peak)
    return peak
