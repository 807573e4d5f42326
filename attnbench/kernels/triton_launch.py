"""How a Triton-based kernel (built in or a plugin) declares what it launches.

A kernel that subclasses :class:`TritonKernel` answers :meth:`TritonKernel.triton_launches`:
for a :class:`LaunchQuery` (target architecture, dtype, head dim, passes, a representative
problem) the list of :class:`TritonLaunch` it would make, with the same jit functions,
arguments, constexprs and launch options as a real run. ``attnbench inspect`` compiles those
launches for the target (without a GPU: the arguments may live on the ``meta`` device, where
only their dtypes, strides and alignment matter) or, on a GPU, runs them and reads what the
launch compiled.

Nothing here imports triton.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from attnbench.errors import UserError

#: architectures ``inspect`` compiles for: name -> CUDA compute capability
ARCHS: dict[str, int] = {"sm80": 80, "sm90": 90, "sm100": 100}


def arch_of_capability(major: int, minor: int) -> str:
    """``sm90`` for (9, 0); the nearest known architecture at or below the capability."""
    cap = major * 10 + minor
    known = [name for name, value in ARCHS.items() if value <= cap]
    if not known:
        raise UserError(f"compute capability {major}.{minor} is below sm80: not supported")
    return max(known, key=ARCHS.__getitem__)


@dataclass(frozen=True)
class LaunchQuery:
    """What to build launches for. ``device``: where the launch arguments are made
    (``meta`` for an offline compile, ``cuda`` to run the launches)."""

    arch: str = "sm90"
    dtype: str = "bfloat16"
    head_dim: int = 128
    passes: tuple[str, ...] = ("forward", "backward")
    mask: str = "causal"
    seqlen: int = 16384
    batch: int = 1
    heads_q: int = 64
    heads_kv: int = 8
    device: str = "meta"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"unknown arch {self.arch!r}; use one of {', '.join(ARCHS)}")
        unknown = set(self.passes) - {"forward", "backward"}
        if unknown or not self.passes:
            raise UserError(f"passes must be forward and/or backward (got {', '.join(self.passes) or 'none'})")
        if self.heads_q % self.heads_kv:
            raise UserError(f"heads_q ({self.heads_q}) must be a multiple of heads_kv ({self.heads_kv})")

    @property
    def capability(self) -> int:
        return ARCHS[self.arch]


@dataclass(frozen=True)
class TritonLaunch:
    """One launch ``fn[grid](*args, **constexprs, num_warps=..., num_stages=...)``.

    ``label`` names it in reports ("forward", "dkdv", ...); ``config`` describes the
    configuration it came from (tiles and the like, shown beside the compiled figures)."""

    label: str
    fn: Any  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3
    config: dict[str, Any] = field(default_factory=dict)

    def __call__(self):
        """Launch it; returns what triton returns (the compiled kernel)."""
        return self.fn[self.grid](*self.args, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages)


class TritonKernel:
    """Mixin of kernels made of Triton jit functions: declares their launches."""

    triton_based: ClassVar[bool] = True

    def triton_launches(self, query: LaunchQuery) -> list[TritonLaunch]:
        raise NotImplementedError


def launches_of(kernel: object, query: LaunchQuery) -> list[TritonLaunch]:
    """The launches a registered kernel declares for ``query``; a clear error for any other kernel."""
    if not isinstance(kernel, TritonKernel):
        name = getattr(kernel, "name", type(kernel).__name__)
        raise UserError(f"kernel {name!r} does not declare Triton launches (only Triton-based kernels can be inspected)")
    launches = kernel.triton_launches(query)
    if not launches:
        raise UserError(f"kernel {kernel.name!r} declares no launches for {', '.join(query.passes)}")  # type: ignore[attr-defined]
    return launches
