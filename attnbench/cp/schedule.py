"""What a CP method does per rank, as data: its collectives, its rings and its local steps.

The same description drives the run (each method's ``prepare`` builds its local masks from
:meth:`CPMethod.step_sources`) and the cost model of ``attnbench advise``
(attnbench.advise), so the model prices exactly the steps and the bytes the method runs.

- :class:`Collective`: one blocking collective of every rank's group, in the forward order;
  ``bytes`` is what a rank sends to other ranks (the counter's convention,
  attnbench.cp.comm), from attnbench.cp.analytic. Groups are ``size`` ranks ``stride``
  apart (Ulysses groups: consecutive ranks).
- :class:`RingSpec`: one level of a ring (outermost first), ``size`` ring positions whose
  ranks are ``stride`` apart; K+V chunks of ``chunk_bytes`` travel around it (and in the
  backward the float32 dK+dV accumulators of ``grad_bytes``), as attnbench.cp.ring does.
- The local steps: every rank holds the queries of its ring position (``plan.ring``,
  ``rank // ulysses``) and, at step ``k``, the keys of the ring positions
  ``step_sources(case, plan, rank)[k]`` (one position per ring step; every position at
  once for an all-gather); ``heads_q`` / ``heads_kv`` are the heads of one rank's steps.

The backward runs the collectives in reverse with their gradients: an all-to-all answers
an all-to-all of the same size, an all-gather a reduce-scatter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: the collective whose cost a forward collective's gradient has
GRADIENT_OF = {"all_to_all": "all_to_all", "all_gather": "reduce_scatter", "reduce_scatter": "all_gather"}


@dataclass(frozen=True)
class Collective:
    op: str  # all_to_all | all_gather | reduce_scatter
    bytes: int  # sent per rank to the other ranks of its group
    size: int  # ranks per group
    stride: int = 1  # rank distance between consecutive members of a group
    what: str = ""  # what it carries, for explanations ("q, k, v in")

    def gradient(self) -> "Collective":
        return replace(self, op=GRADIENT_OF[self.op], what=f"gradient of {self.what}" if self.what else "")


@dataclass(frozen=True)
class RingSpec:
    size: int  # ring positions on this level
    stride: int  # rank distance between neighbours on this level


@dataclass(frozen=True)
class Schedule:
    """One method's per-rank plan of work and communication for one case (forward order)."""

    heads_q: int  # query heads of one rank's local steps
    heads_kv: int  # K/V heads of one rank's local steps (after any repetition)
    pre: tuple[Collective, ...] = ()  # before the local steps
    post: tuple[Collective, ...] = ()  # after them
    rings: tuple[RingSpec, ...] = ()  # () : the steps run back to back, nothing in flight
    chunk_bytes: int = 0  # one K+V chunk of a ring transfer (input dtype)
    grad_bytes: int = 0  # one dK+dV accumulator of a ring transfer (float32)

    def collectives(self, pass_name: str) -> tuple[tuple[Collective, ...], tuple[Collective, ...]]:
        """(before, after) the local steps in ``pass_name`` ("forward" or "backward")."""
        if pass_name == "forward":
            return self.pre, self.post
        return tuple(c.gradient() for c in reversed(self.post)), tuple(c.gradient() for c in reversed(self.pre))


def group_members(rank: int, size: int, stride: int) -> list[int]:
    """The ranks of ``rank``'s group: ``size`` ranks ``stride`` apart (groups tile the world)."""
    base = rank - ((rank // stride) % size) * stride
    return [base + m * stride for m in range(size)]


def ring_neighbour(rank: int, size: int, stride: int, step: int = 1) -> int:
    """The rank ``step`` positions on along a ring level of ``size`` positions ``stride`` apart."""
    m = (rank // stride) % size
    return rank + (((m + step) % size) - m) * stride
