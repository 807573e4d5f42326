"""The kernel interface: support declared as data, availability, and `prepare`.

A kernel is a thin adapter (tritonbench style): `prepare(inputs, mask)` receives the
inputs and the mask and returns a zero-argument closure that runs the attention once and
returns an `AttnOutput`. The harness does all timing, memory measurement and accuracy
checking; a kernel never times itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, NamedTuple

from attnbench.cases import DTYPES, Case, Pass

if TYPE_CHECKING:
    import torch

    from attnbench.masks import Mask

ALL_PASSES = frozenset(Pass)
ALL_DTYPES = frozenset(DTYPES)


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


@dataclass(frozen=True)
class Support:
    """What a kernel can run on one kind of device. `None` means "any"."""

    masks: frozenset[str] | None = None
    passes: frozenset[Pass] = ALL_PASSES
    dtypes: frozenset[str] = ALL_DTYPES
    head_dims: frozenset[int] | None = None
    max_head_dim: int | None = None
    gqa: bool = True
    note: str = ""

    def reason_against(self, case: Case) -> str | None:
        """Why this support matrix excludes `case`, or None when it is covered."""
        if self.masks is not None and case.mask.name not in self.masks:
            return f"mask {case.mask.name!r} not supported (supports {', '.join(sorted(self.masks))})"
        if case.pass_ not in self.passes:
            passes = ", ".join(p.value for p in Pass if p in self.passes)
            extra = f"; {self.note}" if self.note else ""
            return f"pass {case.pass_.value!r} not supported (supports {passes}){extra}"
        if case.dtype not in self.dtypes:
            return f"dtype {case.dtype} not supported (supports {', '.join(d for d in DTYPES if d in self.dtypes)})"
        head_dim = case.shape.head_dim
        if self.head_dims is not None and head_dim not in self.head_dims:
            return f"head_dim {head_dim} not supported (supports {', '.join(map(str, sorted(self.head_dims)))})"
        if self.max_head_dim is not None and head_dim > self.max_head_dim:
            return f"head_dim {head_dim} above the maximum {self.max_head_dim}"
        if not self.gqa and case.shape.heads_q != case.shape.heads_kv:
            return "GQA/MQA (heads_q != heads_kv) not supported"
        return None

    def to_dict(self) -> dict:
        return {
            "masks": sorted(self.masks) if self.masks is not None else "all",
            "passes": [p.value for p in Pass if p in self.passes],
            "dtypes": [d for d in DTYPES if d in self.dtypes],
            "head_dims": sorted(self.head_dims) if self.head_dims is not None else "any",
            "max_head_dim": self.max_head_dim,
            "gqa": self.gqa,
            "note": self.note,
        }


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str | None = None


def device_type(device: str) -> str:
    return device.split(":", 1)[0]


@dataclass
class MemoryModel:
    """Bytes a kernel needs beyond its inputs and outputs, for the pre-run prediction."""

    per_score: float = 0.0  # bytes per (batch, head_q, query, key) element it materialises
    per_mask_element: float = 0.0  # bytes per (query, key) of a head-shared dense mask
    per_token_head: float = 0.0  # bytes per (batch, head_q, token, head_dim) element


class Kernel:
    """Base class of every kernel adapter. Subclasses set the class attributes and `prepare`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: device type ("cpu", "cuda") -> what runs there; a device missing here is unsupported.
    support: ClassVar[Mapping[str, Support]] = {}
    #: "dense" kernels compute every (query, key) pair whatever the mask; "sparse" ones
    #: only the mask's area. Used to predict run time before a case is attempted.
    work: ClassVar[str] = "sparse"
    memory: ClassVar[MemoryModel] = MemoryModel()

    # -- availability and support -------------------------------------------------
    def availability(self, device: str) -> Availability:
        kind = device_type(device)
        if kind not in self.support:
            needs = " or ".join(sorted(self.support)) or "nothing"
            return Availability(False, f"needs {needs.upper() if needs == 'cuda' else needs}")
        if kind == "cuda":
            import torch

            if not torch.cuda.is_available():
                return Availability(False, "needs CUDA (no CUDA device here)")
        return self.backend_availability(device)

    def backend_availability(self, device: str) -> Availability:
        """Override to check the back end itself (a library installed, a probe call)."""
        return Availability(True)

    def unsupported_reason(self, case: Case) -> str | None:
        available = self.availability(case.device)
        if not available.ok:
            return available.reason
        support = self.support[device_type(case.device)]
        return support.reason_against(case)

    # -- running ------------------------------------------------------------------
    def prepare(self, inputs: AttnInputs, mask: "Mask") -> Callable[[], AttnOutput]:
        raise NotImplementedError

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
        available = self.availability(device)
        return {
            "name": self.name,
            "description": self.description,
            "available": available.ok,
            "reason": available.reason,
            "work": self.work,
            "support": {dev: s.to_dict() for dev, s in self.support.items()},
        }


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def repeat_kv(x: "torch.Tensor", groups: int) -> "torch.Tensor":
    """[B, Hkv, S, D] -> [B, Hkv*groups, S, D]: query head h reads kv head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


