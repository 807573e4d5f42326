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


@dataclass
class ErrorSums:
    """What :func:`tensor_error` needs, as sums that add up over disjoint parts of a tensor
    (so ranks holding shards can reduce them): squared error, squared reference norm (finite
    entries), largest absolute error, and whether a NaN appeared in the difference or a
    non-finite value where the reference has none."""

    sq_err: float = 0.0
    sq_ref: float = 0.0
    max_abs: float = 0.0
    nan_diff: bool = False
    has_nan: bool = False

    def add(self, other: "ErrorSums") -> "ErrorSums":
        return ErrorSums(self.sq_err + other.sq_err, self.sq_ref + other.sq_ref, max(self.max_abs, other.max_abs),
                         self.nan_diff or other.nan_diff, self.has_nan or other.has_nan)

    def finish(self, tiny: float = torch.finfo(torch.float64).tiny) -> TensorError:
        max_abs = float("nan") if self.nan_diff else self.max_abs
        err = float("nan") if self.nan_diff else math.sqrt(self.sq_err)
        return TensorError(max_abs=max_abs, rel_l2=err / max(math.sqrt(self.sq_ref), tiny), has_nan=self.has_nan)


def error_sums(actual: torch.Tensor, expected: torch.Tensor) -> ErrorSums:
    """The error sums of ``actual`` against ``expected``, in ``expected``'s dtype and device."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise ValueError(f"shape mismatch: actual {tuple(actual.shape)} vs expected {tuple(expected.shape)}")
    with torch.no_grad():
        e = expected.detach()
        if not e.is_floating_point():
            e = e.to(torch.float64)
        a = actual.detach().to(device=e.device, dtype=e.dtype)
        if a.numel() == 0:
            return ErrorSums()
        same = a == e  # also True for equal infinities
        has_nan = bool((~torch.isfinite(a) & ~same).any())
        diff = torch.where(same, torch.zeros((), dtype=e.dtype, device=e.device), a - e)
        nan_diff = bool(torch.isnan(diff).any())
        max_abs = 0.0 if nan_diff else float(diff.abs().max())
        e_finite = torch.where(torch.isfinite(e), e, torch.zeros((), dtype=e.dtype, device=e.device))
        sq_err = float(torch.linalg.vector_norm(diff)) ** 2
        sq_ref = float(torch.linalg.vector_norm(e_finite)) ** 2
    return ErrorSums(sq_err=sq_err, sq_ref=sq_ref, max_abs=max_abs, nan_diff=nan_diff, has_nan=has_nan)


def tensor_error(actual: torch.Tensor, expected: torch.Tensor) -> TensorError:
    """Error of ``actual`` against ``expected``, computed in ``expected``'s dtype and on its device."""
    e = expected if expected.is_floating_point() else expected.to(torch.float64)
    return error_sums(actual, expected).finish(torch.finfo(e.dtype).tiny)


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
