"""Helpers shared by the adapters of external attention libraries (fa2, fa3, te_fused,
xformers, flashinfer, magi_ffa). A leading underscore: the registry does not scan it.

Nothing here imports a library: availability looks the module up with ``find_spec`` (so
``attnbench list`` stays fast), adapters import inside ``prepare``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import ClassVar

import numpy as np
import torch

from attnbench.errors import Unsupported
from attnbench.kernels.base import Availability, Kernel, device_type

#: the six masks the FlashAttention family and cuDNN run (cu_seqlens + causal + window)
VARLEN_MASKS = frozenset({"full", "causal", "sliding_window", "sliding_window_causal", "full_document", "causal_document"})
HALF = frozenset({"float16", "bfloat16"})


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken one
        return False


def library_availability(device: str, module: str, label: str, *, min_sm: tuple[int, int] | None = None,
                         exact_sm: tuple[int, int] | None = None, arch_name: str = "") -> Availability:
    """``label not installed`` / ``needs CUDA`` / ``needs Hopper (sm90)`` ..., else available."""
    if not installed(module):
        return Availability(False, f"{label} not installed")
    if device_type(device) != "cuda":
        return Availability(False, "needs CUDA")
    if not torch.cuda.is_available():
        return Availability(False, "needs CUDA (no CUDA device here)")
    index = torch.device(device).index or 0
    cc = torch.cuda.get_device_capability(index)
    if exact_sm is not None and tuple(cc) != exact_sm:
        return Availability(False, f"needs {arch_name or 'sm%d%d' % exact_sm} (sm{exact_sm[0]}{exact_sm[1]}); "
                                   f"this GPU is sm{cc[0]}{cc[1]}")
    if min_sm is not None and tuple(cc) < min_sm:
        return Availability(False, f"needs {arch_name or 'a newer GPU'} (sm{min_sm[0]}{min_sm[1]}+); "
                                   f"this GPU is sm{cc[0]}{cc[1]}")
    return Availability(True)


def import_library(module: str, label: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unsupported(f"{label} not importable: {exc}") from None


def varlen_form(mask):
    """The mask's flash-attn form (cu_seqlens int64, causal, window) or Unsupported."""
    form = mask.varlen
    if form is None:
        raise Unsupported(f"mask {mask.name!r} has no cu_seqlens/window form")
    return form


def batched_cu_seqlens(cu_seqlens: np.ndarray, batch: int, seqlen: int, device) -> torch.Tensor:
    """Document boundaries of ``batch`` sequences packed one after the other: int32 ``[0, ..., B*S]``."""
    cu = np.asarray(cu_seqlens, dtype=np.int64)
    starts = (cu[:-1][None, :] + seqlen * np.arange(batch)[:, None]).reshape(-1)
    packed = np.concatenate([starts, [batch * seqlen]])
    if packed[-1] >= 2**31:
        raise Unsupported("cu_seqlens do not fit int32")
    return torch.from_numpy(packed.astype(np.int32)).to(device)


def to_bshd(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B, S, H, D] (a view: last dim stays contiguous)."""
    return x.transpose(1, 2)


def to_thd(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B*S, H, D] (a view for B == 1, a copy otherwise)."""
    B, H, S, D = x.shape
    return x.transpose(1, 2).reshape(B * S, H, D)


def from_thd(x: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """[B*S, H, D] (or [B*S, H*D]) -> [B, H, S, D] (a view)."""
    x = x.reshape(batch, seqlen, -1, x.shape[-1])
    return x.transpose(1, 2)


def split_out_lse(result):
    """Libraries return ``out``, ``(out, lse)``, ``(out, lse, probs)`` or ``(out, meta)``."""
    if isinstance(result, torch.Tensor):
        return result, None
    out = result[0]
    lse = result[1] if len(result) > 1 else None
    if lse is not None and not isinstance(lse, torch.Tensor):
        lse = getattr(lse, "lse", None)
    return out, lse


def accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class ExternalKernel(Kernel):
    """An adapter of an external library: availability says "X not installed" first (on any
    device), then what the device lacks ("needs CUDA", "needs Hopper (sm90)")."""

    library_module: ClassVar[str] = ""
    library_label: ClassVar[str] = ""
    min_sm: ClassVar[tuple[int, int] | None] = None
    exact_sm: ClassVar[tuple[int, int] | None] = None
    arch_name: ClassVar[str] = ""

    def availability(self, device: str) -> Availability:
        if not installed(self.library_module):
            return Availability(False, f"{self.library_label} not installed")
        return super().availability(device)

    def backend_availability(self, device: str) -> Availability:
        return library_availability(device, self.library_module, self.library_label, min_sm=self.min_sm,
                                    exact_sm=self.exact_sm, arch_name=self.arch_name)
