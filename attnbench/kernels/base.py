"""The kernel interface: support declared as data, availability, and `prepare`.

A kernel is a thin adapter (tritonbench style): `prepare(inputs, mask)` receives the
inputs and the mask and returns a zero-argument closure that runs the attention once and
returns an `AttnOutput`. The harness does all timing, memory measurement and accuracy
checking; a kernel never times itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, NamedTuple

from attnbench.cases import Case
from attnbench.support import DeclaredSupport
# what a kernel adapter declares comes from here too (one import line for adapters)
from attnbench.support import ALL_DTYPES, ALL_PASSES, Availability, Support, device_type  # noqa: F401

if TYPE_CHECKING:
    import torch

    from attnbench.masks import Mask

class AttnOutput(NamedTuple):
    out: "torch.Tensor"
    lse: "torch.Tensor | None" = None  # natural-log logsumexp of the scaled scores, [B, Hq, S]


@dataclass
class AttnInputs:
    """Inputs in the harness layout: q [B, Hq, S, D], k and v [B, Hkv, S, D]."""

    q: "torch.Tensor"
    k: "torch.Tensor"
    v: "torch.Tensor"
    scale: float

    @property
    def heads_q(self) -> int:
        return self.q.shape[1]

    @property
    def heads_kv(self) -> int:
        return self.k.shape[1]

    @property
    def seqlen(self) -> int:
        return self.q.shape[2]


@dataclass
class MemoryModel:
    """Bytes a kernel needs beyond its inputs and outputs, for the pre-run prediction."""

    per_score: float = 0.0  # bytes per (batch, head_q, query, key) element it materialises
    per_mask_element: float = 0.0  # bytes per (query, key) of a head-shared dense mask
    per_token_head: float = 0.0  # bytes per (batch, head_q, token, head_dim) element


class Kernel(DeclaredSupport):
    """Base class of every kernel adapter. Subclasses set `name`, `description`, `support`
    (see attnbench.support), the class attributes below, and `prepare`."""

    #: "dense" kernels compute every (query, key) pair whatever the mask; "sparse" ones
    #: only the mask's area. Used to predict run time before a case is attempted.
    work: ClassVar[str] = "sparse"
    memory: ClassVar[MemoryModel] = MemoryModel()
    #: device type -> seconds the first call of a new graph spends compiling (kernels that
    #: compile; a run pays it once per shape, dtype, pass and mask family: measure.predict)
    compile_seconds: ClassVar[dict[str, float]] = {}
    #: device type -> seconds the first compilation in a process adds (the compiler's own
    #: imports and start; a run pays it once)
    compiler_start_seconds: ClassVar[dict[str, float]] = {}
    #: other names people type for this kernel ("flash_attn2" for fa2): an unknown name that
    #: matches one (case, "-" and "_" aside) is answered with "did you mean" this kernel
    aliases: ClassVar[tuple[str, ...]] = ()

    def unsupported_reason(self, case: Case) -> str | None:
        return self.support_reason(case)

    # -- running ------------------------------------------------------------------
    def prepare(self, inputs: AttnInputs, mask: "Mask") -> Callable[[], AttnOutput]:
        raise NotImplementedError

    def configuration(self, case: Case) -> dict | None:
        """How the kernel will run ``case`` (launch configuration, whether it was tuned), for the
        record's ``kernel_config``; None when there is nothing to say."""
        return None

    # -- context parallelism: the local step --------------------------------------
    #: device types on which :meth:`attend_slices` runs (empty: the kernel cannot be the
    #: local step of a CP method).
    slice_devices: ClassVar[frozenset[str]] = frozenset()

    def attend_slices(self, q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", local, scale: float) -> AttnOutput:
        """Attention of q ``[B, Hq, Lq, D]`` to k, v ``[B, Hkv, Lk, D]`` over the allowed pairs
        of ``local`` (an :class:`attnbench.cp.slices.LocalMask`: slices in local coordinates of
        the ``Lq x Lk`` rectangle, rendered by ``local.dense(device)`` or
        ``local.block_mask(device, block)``). Returns out and the lse, both differentiable;
        a row with no allowed key has out 0, lse -inf and zero gradients."""
        raise NotImplementedError(f"kernel {self.name!r} has no local step for context parallelism")

    #: whether :meth:`attend_slices_backward` is the kernel's own backward step (True) or the
    #: generic fallback that recomputes the step's forward under autograd (False)
    has_slice_backward: ClassVar[bool] = False

    def attend_slices_backward(self, q, k, v, out, lse, dout, local, scale):
        """(dq, dk, dv), float32, of one ring step (FlashAttention-2's ring backward): ``q`` the
        rank's queries, ``k``, ``v`` the step's chunk, ``out`` and ``lse`` the MERGED result of
        the rows over every step, ``dout`` its gradient. The step's probabilities are
        ``exp(scores - lse)`` (merged lse), and ``delta = rowsum(dout * out)``.

        This generic version recomputes the step's (out_t, lse_t) under autograd and feeds it
        the gradients the lse merge gives it: ``w = exp(lse_t - lse)``, ``d out_t = w dout``,
        ``d lse_t = w (rowsum(dout * out_t) - rowsum(dout * out))``; so it needs an
        ``attend_slices`` whose lse gradient is honoured. Kernels with a backward step of
        their own override it (and set ``has_slice_backward``)."""
        import torch

        with torch.enable_grad():
            qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
            o_t, lse_t = self.attend_slices(qq, kk, vv, local, scale)
            lse_t32, lse32 = lse_t.float(), lse.float()
            reached = torch.isfinite(lse_t32) & torch.isfinite(lse32)
            w = torch.where(reached, torch.exp(torch.where(reached, lse_t32 - lse32, 0.0)), 0.0)
            do = dout.float()
            d_out = (do * w.unsqueeze(-1)).to(o_t.dtype)
            d_lse = w * ((do * o_t.detach().float()).sum(-1) - (do * out.float()).sum(-1))
            grads = torch.autograd.grad((o_t, lse_t), (qq, kk, vv), (d_out, d_lse.to(lse_t.dtype)), allow_unused=True)
        return tuple(torch.zeros_like(t, dtype=torch.float32) if g is None else g.float() for g, t in zip(grads, (q, k, v)))

    # -- prediction ---------------------------------------------------------------
    def work_area(self, mask: "Mask") -> float:
        """Pairs the kernel computes per head: the whole square for dense kernels."""
        return float(mask.seqlen) ** 2 if self.work == "dense" else mask.area

    def extra_memory_bytes(self, batch: int, heads_q: int, seqlen: int, head_dim: int) -> int:
        m = self.memory
        square = seqlen * seqlen
        return int(
            m.per_score * batch * heads_q * square
            + m.per_mask_element * square
            + m.per_token_head * batch * heads_q * seqlen * head_dim
        )

    def describe(self, device: str) -> dict:
        return {**self.describe_support(device), "work": self.work}


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def repeat_kv(x: "torch.Tensor", groups: int) -> "torch.Tensor":
    """[B, Hkv, S, D] -> [B, Hkv*groups, S, D]: query head h reads kv head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


