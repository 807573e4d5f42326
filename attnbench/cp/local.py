"""The local step of every CP method: one step's slices through the registered kernel.

:class:`LocalStep` binds the case's kernel (``Kernel.attend_slices`` and
``Kernel.attend_slices_backward``; which kernels can, on which device, is declared by
``Kernel.slice_devices``), the softmax scale and the rank's :class:`Switches`. It offers:

- :meth:`LocalStep.attend`: differentiable (out, lse) of one step, for methods whose local
  attention is one call (Ulysses, all-gather). A step whose slices are empty calls no kernel:
  it yields out 0 and lse -inf through :class:`_EmptyStep`, a node with the same inputs as a
  real step, so every rank's autograd graph has the same shape whatever its steps contain
  (every rank then runs the backward collectives in the same order);
- :meth:`LocalStep.forward` / :meth:`LocalStep.backward`: one ring step without autograd
  (attnbench.cp.ring): (out, lse) of the step, and later its (dq, dk, dv) given the merged
  out, lse and dout. An empty step returns None.

With ``switches.compute`` off (the worker's communication-only timing) no kernel is called:
``attend`` gives zeros, ``forward`` and ``backward`` None.

:class:`Partial` accumulates ring steps by log-sum-exp in float32, in place (no autograd),
safe for rows whose lse is still -inf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attnbench.cp.comm import Switches
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


@dataclass
class LocalStep:
    """The kernel of a rank's local steps, with the scale and the rank's switches."""

    kernel: object
    scale: float
    switches: Switches = field(default_factory=Switches)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, local: LocalMask) -> tuple:
        """(out ``[B, Hq, Lq, D]``, lse ``[B, Hq, Lq]`` float32) of one step; differentiable."""
        if local.empty or not self.switches.compute:
            return _EmptyStep.apply(q, k, v)
        out, lse = self.kernel.attend_slices(q, k, v, local, self.scale)
        return out, lse.float()

    def forward(self, q, k, v, local: LocalMask):
        """(out, lse float32) of one ring step, no autograd; None for an empty step."""
        if local.empty or not self.switches.compute:
            return None
        with torch.no_grad():
            out, lse = self.kernel.attend_slices(q, k, v, local, self.scale)
        return out, lse.float()

    def backward(self, q, k, v, out, lse, dout, local: LocalMask):
        """(dq, dk, dv) float32 of one ring step, given the MERGED out and lse of the rows and
        their dout; None for an empty step."""
        if local.empty or not self.switches.compute:
            return None
        return self.kernel.attend_slices_backward(q, k, v, out, lse, dout, local, self.scale)


class Partial:
    """Running (out, lse) of a query block over the ring steps seen so far (float32, in place)."""

    def __init__(self) -> None:
        self.out: torch.Tensor | None = None
        self.lse: torch.Tensor | None = None

    def add(self, out: torch.Tensor, lse: torch.Tensor) -> None:
        if self.out is None:
            self.out, self.lse = out.float().clone(), lse.float().clone()
            return
        merge_into(self.out, self.lse, out, lse)

    def result(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(out in ``like``'s dtype, lse float32); rows never reached: out 0, lse -inf."""
        if self.out is None:
            return torch.zeros_like(like), torch.full(like.shape[:-1], float("-inf"), device=like.device)
        return self.out.to(like.dtype), self.lse


@torch.no_grad()
def merge_into(out: torch.Tensor, lse: torch.Tensor, out2: torch.Tensor, lse2: torch.Tensor) -> None:
    """(out, lse) <- the log-sum-exp merge of (out, lse) and (out2, lse2), in place; NaN-free
    for rows that are -inf on either or both sides."""
    m = torch.maximum(lse, lse2)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1 = torch.exp(lse - m)
    w2 = torch.exp(lse2.float() - m)
    s = w1 + w2
    has = s > 0
    s_safe = torch.where(has, s, torch.ones_like(s))
    out.mul_((w1 / s_safe).unsqueeze(-1)).add_(out2.float() * (w2 / s_safe).unsqueeze(-1))
    lse.copy_(torch.where(has, m + torch.log(s_safe), torch.full_like(s, float("-inf"))))
