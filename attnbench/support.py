"""Support declared as data, shared by kernels and CP methods.

A `Support` says what runs on one kind of device; `DeclaredSupport` turns a class's
`support` table (device type -> Support) into availability, a reason against a case, and
the description `attnbench list` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from attnbench.cases import DTYPES, Case, Pass

ALL_PASSES = frozenset(Pass)
ALL_DTYPES = frozenset(DTYPES)


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



class DeclaredSupport:
    """`support` (device type -> Support) made into availability, reasons and a description."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: device type ("cpu", "cuda") -> what runs there; a device missing here is unsupported.
    support: ClassVar[Mapping[str, Support]] = {}

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

    def support_reason(self, case: Case) -> str | None:
        """Why availability or the support matrix excludes `case`, or None."""
        available = self.availability(case.device)
        if not available.ok:
            return available.reason
        return self.support[device_type(case.device)].reason_against(case)

    def describe_support(self, device: str) -> dict:
        available = self.availability(device)
        return {
            "name": self.name,
            "description": self.description,
            "available": available.ok,
            "reason": available.reason,
            "support": {dev: s.to_dict() for dev, s in self.support.items()},
        }
