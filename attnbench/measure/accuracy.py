"""Accuracy of a kernel's outputs against the reference.

Errors are computed in the expected tensor's dtype (float64 on CPU, float32 on CUDA):
``max_abs = max |a - e|`` and ``rel_l2 = ||a - e||_2 / max(||e||_2, tiny)``. A NaN or
infinity in the actual tensor (other than an infinity the reference has at the same
place, e.g. lse = -inf of an empty row) sets ``has_nan``; the error numbers then become
NaN or inf and serialise as None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.measure.reference import Reference

REFERENCE_KEYS = ("out", "lse", "dq", "dk", "dv")


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass
class TensorError:
    max_abs: float
    rel_l2: float
    has_nan: bool

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": _json_float(self.max_abs), "rel_l2": _json_float(self.rel_l2), "has_nan": bool(self.has_nan)}


def tensor_error(actual: torch.Tensor, expected: torch.Tensor) -> TensorError:
    """Error of ``actual`` against ``expected``, computed in ``expected``'s dtype and on its device."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise ValueError(f"shape mismatch: actual {tuple(actual.shape)} vs expected {tuple(expected.shape)}")
    with torch.no_grad():
        e = expected.detach()
        if not e.is_floating_point():
            e = e.to(torch.float64)
        a = actual.detach().to(device=e.device, dtype=e.dtype)
        if a.numel() == 0:
            return TensorError(max_abs=0.0, rel_l2=0.0, has_nan=False)
        same = a == e  # also True for equal infinities
        has_nan = bool((~torch.isfinite(a) & ~same).any())
        diff = torch.where(same, torch.zeros((), dtype=e.dtype, device=e.device), a - e)
        max_abs = float("nan") if bool(torch.isnan(diff).any()) else float(diff.abs().max())
        err_norm = float(torch.linalg.vector_norm(diff))
        e_finite = torch.where(torch.isfinite(e), e, torch.zeros((), dtype=e.dtype, device=e.device))
        ref_norm = float(torch.linalg.vector_norm(e_finite))
        tiny = torch.finfo(e.dtype).tiny
        rel_l2 = err_norm / max(ref_norm, tiny)
    return TensorError(max_abs=max_abs, rel_l2=rel_l2, has_nan=has_nan)


def compare_to_reference(actual: dict[str, torch.Tensor | None], ref: Reference) -> dict[str, TensorError]:
    """Errors for each of out, lse, dq, dk, dv present (not None) on both sides."""
    unknown = set(actual) - set(REFERENCE_KEYS)
    if unknown:
        raise ValueError(f"unknown output name(s) {sorted(unknown)}; use {', '.join(REFERENCE_KEYS)}")
    errors: dict[str, TensorError] = {}
    for key in REFERENCE_KEYS:
        a = actual.get(key)
        e = getattr(ref, key, None)
        if a is None or e is None:
            continue
        errors[key] = tensor_error(a, e)
    return errors
