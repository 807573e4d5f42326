"""The local step of every CP method: attend over one step's slices, merge partial results.

:func:`attend` consults the registered kernel named by the case (``Kernel.attend_slices``;
which kernels can, on which device, is declared by ``Kernel.slice_devices``). A step whose
slices are empty calls no kernel: it yields out 0 and lse -inf through :class:`_EmptyStep`,
a node with the same inputs as a real step. Keeping a node there makes every rank's autograd
graph identical in shape whatever its steps contain, so every rank runs the backward
collectives in the same order (the autograd engine orders ready nodes by creation).

:class:`Partial` accumulates results by log-sum-exp in float32; it is differentiable and
safe for rows whose lse is still -inf.
"""

from __future__ import annotations

import torch

from attnbench.cp.slices import LocalMask


class _EmptyStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.like = [(t.shape, t.dtype, t.device) for t in (q, k, v)]
        out = torch.zeros_like(q)
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        return tuple(torch.zeros(s, dtype=d, device=dev) for s, d, dev in ctx.like)


def kernel_reason(kernel_name: str, device: str) -> str | None:
    """Why ``kernel_name`` cannot be the local step on ``device`` (None when it can)."""
    from attnbench.kernels import KERNELS
    from attnbench.kernels.base import device_type

    if kernel_name not in KERNELS:
        return f"unknown kernel {kernel_name!r}"
    kernel = KERNELS.get(kernel_name)
    dev = device_type(device)
    if dev not in kernel.slice_devices:
        able = [name for name, k in KERNELS.items() if dev in getattr(k, "slice_devices", ())]
        return (f"kernel {kernel_name!r} has no CP local step (output and lse for arbitrary slices) on {dev}"
                f"; use {' or '.join(able) or 'another kernel'}")
    available = kernel.availability(device)
    return None if available.ok else available.reason


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, local: LocalMask, scale: float, kernel) -> tuple:
    """(out ``[B, Hq, Lq, D]``, lse ``[B, Hq, Lq]`` float32) of one step; differentiable."""
    if local.empty:
        return _EmptyStep.apply(q, k, v)
    out, lse = kernel.attend_slices(q, k, v, local, scale)
    return out, lse.float()


class Partial:
    """Running (out, lse) of a query block over the steps seen so far (float32)."""

    def __init__(self) -> None:
        self.out: torch.Tensor | None = None
        self.lse: torch.Tensor | None = None

    def add(self, out: torch.Tensor, lse: torch.Tensor) -> None:
        out = out.float()
        if self.out is None:
            self.out, self.lse = out, lse
            return
        self.out, self.lse = merge(self.out, self.lse, out, lse)

    def result(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.out.to(dtype), self.lse


def merge(out1, lse1, out2, lse2):
    """Log-sum-exp merge of two partial softmax results (NaN-free for -inf rows).

    ``m`` is detached: the result does not depend on it mathematically, and it keeps the
    gradient of ``max`` (ill-defined at ties and infinities) out of the graph.
    """
    m = torch.maximum(lse1, lse2).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1 = torch.exp(lse1 - m)
    w2 = torch.exp(lse2 - m)
    s = w1 + w2
    has = s > 0
    s_safe = torch.where(has, s, torch.ones_like(s))
    lse = torch.where(has, m + torch.log(s_safe), torch.full_like(s, float("-inf")))
    out = out1 * (w1 / s_safe).unsqueeze(-1) + out2 * (w2 / s_safe).unsqueeze(-1)
    return out, lse
