"""The CP method interface: support as data, shape rules, a plan, and the per-rank run.

A method is one file in ``attnbench/cp/methods/`` registering a :class:`CPMethod` subclass:

- ``support``: device type -> :class:`CPSupport` (masks, passes, dtypes), like kernels;
- ``params``: the CP parameters it reads from ``case.cp.params`` (name -> help);
- :meth:`check`: shape rules (heads divisible by the Ulysses degree, ...), reason or None;
- :meth:`plan`: how tokens and heads are split (:class:`Plan`), pure numpy, no processes;
- :meth:`prepare`: in a rank process, everything a run needs (groups, local masks), returning
  a :class:`CPRun` whose ``forward(q, k, v, need_lse)`` maps the rank's local shards (in the
  plan's layout) to its local output (and lse), differentiably, counting communication;
- :meth:`expected_comm`: the analytic bytes and calls per rank per pass (attnbench.cp.analytic);
- :meth:`step_sources` and :meth:`schedule`: the rank's local steps and the method's
  collectives and rings as data (attnbench.cp.schedule), shared by ``prepare`` and the cost
  model of ``attnbench advise``.

Sequence layout vocabulary: a Ulysses group of ``u`` ranks shares the tokens of one ring
position; ``plan.ring`` gives those tokens (one entry per ring position), ``plan.layout``
the tokens of every rank (``plan.ring.split(u)``). Rank ``g * u + j`` is member ``j`` of
the Ulysses group at ring position ``g``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from attnbench.cases import Case
from attnbench.cp.dispatch import Layout, make_layout
from attnbench.cp.schedule import Schedule
from attnbench.cp.slices import query_area
from attnbench.errors import Unsupported
from attnbench.support import DeclaredSupport, Support

#: a method's support matrix is the kernels' one (head dims are left open: "any")
CPSupport = Support


@dataclass(frozen=True, eq=False)
class Plan:
    """How one case is split: ``layout`` (W ranks), ``ring`` (W / u positions), ``ulysses`` u."""

    layout: Layout
    ring: Layout
    ulysses: int = 1
    rings: tuple[int, ...] = ()  # the ring sizes, outermost first (attnbench.cp.ring); () for none
    extra: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The resolved split (defaults applied), for the record."""
        return {"dispatch": self.ring.strategy,
                "ulysses_degree": self.ulysses, "rings": list(self.rings), **dict(self.extra)}

    def rank_area(self, mask) -> list[int]:
        """Pairs each rank computes, per query head: its ring position's rows against all
        keys, shared by the ``u`` members of the Ulysses group (each does 1/u of the heads)."""
        per_group = [query_area(mask.slices, runs) for runs in self.ring.runs]
        u = self.ulysses
        return [int(round(per_group[r // u] / u)) for r in range(self.layout.world)]


@dataclass
class CPContext:
    """What a rank's run is built from (made by attnbench.cp.worker)."""

    case: Case
    mask: Any
    rank: int
    world: int
    device: Any  # torch.device
    scale: float
    step: Any  # LocalStep: the case's kernel as the local step (its kernel None for methods without one)
    counter: Any  # CommCounter
    comm: Any  # Comm over the whole world (Comm.sub for groups)


@dataclass
class CPRun:
    """A prepared method on one rank. ``forward(q, k, v, need_lse) -> (out, lse | None)`` on
    the rank's local shards; ``scope()`` is entered around forward and backward."""

    forward: Callable
    scope: Callable[[], Any] = contextlib.nullcontext


class CPMethod(DeclaredSupport):
    """Base class of every CP method."""

    support: ClassVar[Mapping[str, CPSupport]] = {"cpu": CPSupport(), "cuda": CPSupport()}
    #: CP parameters read from ``case.cp.params`` (name -> help)
    params: ClassVar[Mapping[str, str]] = {}
    #: whether ``case.kernel`` is the local step (torch_cp brings its own)
    uses_kernel: ClassVar[bool] = True
    #: whether all communication goes through attnbench's Comm and every local step through
    #: LocalStep, so that the worker can time compute only and communication only
    separable: ClassVar[bool] = True
    #: whether the bytes it sends are counted (False: recorded as unknown)
    counts_comm: ClassVar[bool] = True

    # -- availability and support --------------------------------------------------------
    def check(self, case: Case) -> str | None:
        """Shape rules of the method (override); None when the case can run."""
        return None

    def unsupported_reason(self, case: Case) -> str | None:
        """Why ``case`` cannot run (availability, support, parameters, shapes, kernel, token
        split), or None. Decided from the case alone: identical on every rank."""
        try:
            return self._reason(case)
        except Unsupported as exc:
            return str(exc) or f"{self.name} cannot run this case"

    def model_unsupported_reason(self, case: Case) -> str | None:
        """:meth:`model_reason` with a token split that raises turned into its reason."""
        try:
            return self.model_reason(case)
        except Unsupported as exc:
            return str(exc) or f"{self.name} cannot run this case"

    def _reason(self, case: Case) -> str | None:
        available = self.availability(case.device)
        if not available.ok:
            return available.reason
        return self.model_reason(case, kernel=True)

    def model_reason(self, case: Case, *, kernel: bool = False) -> str | None:
        """Why ``case`` cannot run on a machine of its device type, whatever this one has
        (support matrix, parameters, shapes, token split; the local kernel's availability
        only with ``kernel``): what the cost model of ``attnbench advise`` asks. None: it can."""
        from attnbench.support import device_type

        kind = device_type(case.device)
        if kind not in self.support:
            needs = " or ".join(sorted(self.support)) or "nothing"
            return f"needs {needs.upper() if needs == 'cuda' else needs}"
        reason = self.support[kind].reason_against(case)
        if reason:
            return reason
        from attnbench.masks import MASKS

        if case.mask.name in MASKS and MASKS.get(case.mask.name).dynamic:
            return f"mask {case.mask.name!r} is dynamic (per head); CP methods run the static masks"
        unknown = sorted(set(case.cp.params) - set(self.params)) if case.cp else []
        if unknown:
            return f"unknown parameter {unknown[0]!r} for CP method {self.name!r} (known: {', '.join(self.params) or 'none'})"
        reason = self.check(case)
        if reason:
            return reason
        if kernel and self.uses_kernel:
            from attnbench.cp.local import kernel_reason

            reason = kernel_reason(case.kernel, case.device)
            if reason:
                return reason
        from attnbench.masks import build_mask

        self.plan(case, build_mask(case.mask.name, case.shape.seqlen, case.mask.params))  # raises Unsupported
        return None

    # -- planning and running ----------------------------------------------------------------
    def ring_sizes(self, case: Case) -> tuple[int, ...]:
        """The sizes of the method's rings, outermost first (() without a ring)."""
        return ()

    def plan(self, case: Case, mask) -> Plan:
        """Default: a ring over all ranks, tokens dispatched by ``dispatch`` (default auto)."""
        layout = make_layout(mask, world_of(case), str(param(case, "dispatch", "auto")))
        return Plan(layout=layout, ring=layout, ulysses=1, rings=self.ring_sizes(case))

    def prepare(self, ctx: CPContext, plan: Plan) -> CPRun:
        raise NotImplementedError

    def expected_comm(self, case: Case) -> dict[str, tuple[int, int]]:
        """pass -> (bytes sent, calls) per rank, analytic (override)."""
        raise NotImplementedError

    def step_sources(self, case: Case, plan: Plan, rank: int) -> tuple[tuple[int, ...], ...]:
        """The local attention calls of ``rank`` in the order it makes them: for each, the ring
        positions (``plan.ring``) whose keys it attends to; its queries are those of ring
        position ``rank // plan.ulysses`` (override; attnbench.cp.schedule)."""
        raise NotImplementedError(f"{self.name} does not describe its steps")

    def schedule(self, case: Case, plan: Plan) -> Schedule:
        """The method's collectives and rings for ``case`` (override; attnbench.cp.schedule).
        NotImplementedError: its communication is not attnbench's to describe."""
        raise NotImplementedError(f"{self.name} does not describe its schedule")

    def describe(self, device: str) -> dict:
        return {**self.describe_support(device), "params": dict(self.params)}


# -- small shared helpers -----------------------------------------------------------------
def world_of(case: Case) -> int:
    if case.cp is None:
        raise ValueError(f"case {case.label()} has no cp spec")
    return case.cp.world_size


def param(case: Case, name: str, default: Any) -> Any:
    return (case.cp.params if case.cp else {}).get(name, default)


def kv_repeat(heads_kv: int, degree: int) -> int:
    """KV head repetition so that ``degree`` ranks each get whole KV heads (1: none)."""
    return 1 if heads_kv % degree == 0 else math.lcm(heads_kv, degree) // heads_kv


def ulysses_check(case: Case, degree: int) -> str | None:
    hq = case.shape.heads_q
    if degree < 1 or world_of(case) % degree:
        return f"ulysses_degree {degree} does not divide the world size {world_of(case)}"
    if hq % degree:
        return f"heads_q {hq} is not divisible by the Ulysses degree {degree}"
    return None


def int_param(case: Case, name: str, default: int) -> int:
    value = param(case, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise Unsupported(f"CP parameter {name} must be an integer, got {value!r}")
    return int(value)
