"""One pass of a CP method, simulated on every rank at once: when each rank finishes.

The operations are those of the method's code, in its order (attnbench.cp.schedule gives
the collectives and rings, attnbench.cp.ring the order of the ring's posts and waits), and
every rank runs the same sequence; only the durations differ per rank. So the ranks are
stepped together, operation by operation (numpy arrays over the ranks):

- a blocking collective starts when the last member of its group arrives and ends one call
  later (the network model's time for its bytes on its link);
- a ring transfer is posted by the sender and the receiver at the start of their step; it
  starts when both have posted and lasts the p2p time of its bytes on that hop's link; a
  wait ends when this rank's receive (from ``src``) and send (to ``dst``) are both done;
- a local step takes its compute time; while transfers of this rank are in flight, the
  share of them the backend cannot hide (``1 - overlap``) is added to it (0 on NCCL, most
  of it where ranks share CPU cores);
- a method without a ring runs its steps back to back.

What comes out per rank: the end time (all ranks start together after the barrier the
worker puts before each timed iteration, as attnbench.cp.worker does), its compute, and
the time its collectives and transfers took. Exposed communication is what the slowest
rank spent beyond its compute.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from attnbench.cp.schedule import Collective, RingSpec, Schedule, group_members, ring_neighbour

#: seconds of (op, bytes, group members) for one call
CollectivePrice = Callable[[str, float, list], float]
#: seconds of one p2p transfer of ``bytes`` from each rank to ``dst[rank]`` (array over ranks)
#: on a ring level of ``size`` positions
TransferPrice = Callable[[float, np.ndarray, int], np.ndarray]


@dataclass
class PassTimeline:
    end_s: np.ndarray  # per rank: when it finished the pass
    compute_s: np.ndarray  # per rank: its local steps (contention included)
    communication_s: np.ndarray  # per rank: its collectives and transfers, one after the other
    contention_s: np.ndarray  # per rank: what transfers in flight added to its steps

    @property
    def seconds(self) -> float:
        return float(self.end_s.max()) if len(self.end_s) else 0.0

    @property
    def slowest(self) -> int:
        return int(np.argmax(self.end_s))


def forward_ops(levels: tuple[RingSpec, ...]) -> Iterator[tuple]:
    """The ring forward of attnbench.cp.ring._forward as ("post", level, id, kind),
    ("step",), ("wait", id)."""
    ids = itertools.count()

    def visit(level: int):
        n = levels[level].size
        for t in range(n):
            nxt = next(ids) if t + 1 < n else None
            if nxt is not None:
                yield ("post", level, nxt, "kv")
            if level + 1 < len(levels):
                yield from visit(level + 1)
            else:
                yield ("step",)
            if nxt is not None:
                yield ("wait", nxt)

    yield from visit(0)


def backward_ops(levels: tuple[RingSpec, ...]) -> Iterator[tuple]:
    """The ring backward of attnbench.cp.ring._backward: K/V again, and the float32
    accumulator of each chunk one hop behind it."""
    ids = itertools.count()

    def visit(level: int):
        n = levels[level].size
        incoming = None
        for t in range(n):
            nxt = next(ids) if t + 1 < n else None
            if nxt is not None:
                yield ("post", level, nxt, "kv")
            if level + 1 < len(levels):
                yield from visit(level + 1)
            else:
                yield ("step",)
            if incoming is not None:
                yield ("wait", incoming)
            if n > 1:
                incoming = next(ids)
                yield ("post", level, incoming, "grad")
            if nxt is not None:
                yield ("wait", nxt)
        if incoming is not None:
            yield ("wait", incoming)

    yield from visit(0)


def _collective(now, c: Collective, world: int, price: CollectivePrice, comm_s) -> np.ndarray:
    out = now.copy()
    done = set()
    for rank in range(world):
        members = group_members(rank, c.size, c.stride)
        if members[0] in done:
            continue
        done.add(members[0])
        seconds = price(c.op, c.bytes, members)
        end = float(now[members].max()) + seconds
        out[members] = end
        comm_s[members] += seconds
    return out


def simulate(schedule: Schedule, pass_name: str, steps: np.ndarray, *, collective: CollectivePrice,
             transfer: TransferPrice, overlap: float) -> PassTimeline:
    """``steps[rank, k]``: seconds of rank's k-th local step in this pass (contention of ranks
    sharing cores included); returns every rank's timeline."""
    world = steps.shape[0]
    now = np.zeros(world)
    comm = np.zeros(world)
    contention = np.zeros(world)
    before, after = schedule.collectives(pass_name)
    for c in before:
        now = _collective(now, c, world, collective, comm)
    if schedule.rings:
        now = _ring(schedule, pass_name, steps, now, transfer, overlap, comm, contention)
    else:
        now = now + steps.sum(axis=1)
    for c in after:
        now = _collective(now, c, world, collective, comm)
    return PassTimeline(end_s=now, compute_s=steps.sum(axis=1) + contention, communication_s=comm,
                        contention_s=contention)


def _ring(schedule, pass_name, steps, now, transfer, overlap, comm, contention) -> np.ndarray:
    world = steps.shape[0]
    ranks = np.arange(world)
    dst = [np.array([ring_neighbour(r, lv.size, lv.stride, 1) for r in ranks]) for lv in schedule.rings]
    src = [np.array([ring_neighbour(r, lv.size, lv.stride, -1) for r in ranks]) for lv in schedule.rings]
    cost = {}
    for level in range(len(schedule.rings)):
        size = schedule.rings[level].size
        cost[level, "kv"] = transfer(schedule.chunk_bytes, dst[level], size)
        cost[level, "grad"] = transfer(schedule.grad_bytes, dst[level], size)
    posted: dict[int, tuple[np.ndarray, int, np.ndarray]] = {}
    pending: dict[int, np.ndarray] = {}  # in flight: the transfer time still to hide
    step = 0
    ops = forward_ops(schedule.rings) if pass_name == "forward" else backward_ops(schedule.rings)
    for op in ops:
        if op[0] == "post":
            _, level, ident, kind = op
            seconds = cost[level, kind]
            posted[ident] = (now.copy(), level, seconds)
            pending[ident] = seconds.copy()
            comm += seconds
        elif op[0] == "step":
            c = steps[:, step]
            step += 1
            busy = sum(pending.values()) if pending else np.zeros(world)
            extra = (1.0 - overlap) * np.minimum(c, busy)
            contention += extra
            now = now + c + extra
            for ident in pending:  # what ran beside this step is no longer to be hidden
                pending[ident] = np.maximum(0.0, pending[ident] - c)
        else:
            ident = op[1]
            at, level, seconds = posted.pop(ident)
            pending.pop(ident, None)
            s, d = src[level], dst[level]
            received = np.maximum(at[s], at) + seconds[s]
            sent = np.maximum(at, at[d]) + seconds
            now = np.maximum(now, np.maximum(received, sent))
    return now
