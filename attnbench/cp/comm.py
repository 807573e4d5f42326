"""Counted collectives, and differentiable versions of them.

Every byte a CP method communicates goes through a :class:`Comm`, which performs the
collective and adds to a :class:`CommCounter`, per pass: an op called in a forward adds to
``"forward"``, the op its autograd backward runs adds to ``"backward"``. Bytes counted are
the payload this rank sends to OTHER ranks (its own share of an all-to-all or reduce-scatter
stays home and is not counted): all_to_all ``(n-1)/n`` of its input, all_gather ``(n-1)``
times its shard, reduce_scatter ``(n-1)/n`` of its input, a P2P send the tensor sent. For
all_gather and reduce_scatter that is also what a ring algorithm puts on the wire. A group
of one rank communicates nothing and counts nothing.

Autograd pairs (so that backward is real communication, as in training):
all_to_all <-> all_to_all with the dims swapped; all_gather <-> reduce_scatter. The ring's
exchanges are issued by its own autograd Function (attnbench.cp.ring), forward and backward.

A ring exchange may run asynchronously: :meth:`Comm.exchange` with ``wait=False`` returns
the receive buffer at once and the caller calls :meth:`Comm.wait` before reading it,
overlapping the transfer with the step's compute (double buffering; attnbench.cp.ring).

:class:`Switches` (shared by every Comm of a rank, and by the local step) let the worker
time the same iteration without communication: with ``communicate`` off every collective
returns a buffer of the right shape made from local data (the input itself, its own chunk)
and moves nothing, counts nothing. Values are then meaningless; only the time is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist

PASSES = ("forward", "backward")


@dataclass
class Switches:
    """What a rank's iteration does: communicate, compute (attnbench.cp.local), or both."""

    communicate: bool = True
    compute: bool = True


@dataclass
class CommCounter:
    """bytes and calls per pass, for this rank."""

    bytes: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PASSES})
    calls: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PASSES})
    enabled: bool = True

    def add(self, phase: str, nbytes: int) -> None:
        if self.enabled:
            self.bytes[phase] += int(nbytes)
            self.calls[phase] += 1

    def reset(self) -> None:
        for p in PASSES:
            self.bytes[p] = 0
            self.calls[p] = 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class Comm:
    """One process group (``None``: the default group) plus the shared counter and switches."""

    def __init__(self, counter: CommCounter, group=None, switches: Switches | None = None) -> None:
        self.counter = counter
        self.group = group
        self.switches = switches or Switches()
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._pending: dict[int, tuple] = {}

    def sub(self, group) -> "Comm":
        """A Comm over ``group`` sharing this one's counter and switches."""
        return Comm(self.counter, group, self.switches)

    @property
    def live(self) -> bool:
        return self.switches.communicate

    def global_rank(self, group_rank: int) -> int:
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)

    # -- plain collectives (counted) ----------------------------------------------------
    def all_to_all(self, x: torch.Tensor, scatter_dim: int, gather_dim: int, phase: str) -> torch.Tensor:
        """Split ``x`` into ``size`` chunks along ``scatter_dim``, chunk i to rank i; the
        chunks received are concatenated along ``gather_dim`` in rank order."""
        n = self.size
        if n == 1:
            return x
        send = torch.stack(x.chunk(n, dim=scatter_dim)).contiguous()
        if not self.live:
            return torch.cat(send.unbind(0), dim=gather_dim)
        recv = torch.empty_like(send)
        self.counter.add(phase, _nbytes(send) * (n - 1) // n)
        dist.all_to_all_single(recv, send, group=self.group)
        return torch.cat(recv.unbind(0), dim=gather_dim)

    def all_gather(self, x: torch.Tensor, dim: int, phase: str) -> torch.Tensor:
        """Shards of every rank concatenated along ``dim`` in rank order."""
        n = self.size
        if n == 1:
            return x
        send = x.contiguous()
        if not self.live:
            return torch.cat([send] * n, dim=dim)
        recv = torch.empty((n, *send.shape), dtype=send.dtype, device=send.device)
        self.counter.add(phase, _nbytes(send) * (n - 1))
        _all_gather_single(recv.view(-1), send.view(-1), group=self.group)
        return torch.cat(recv.unbind(0), dim=dim)

    def reduce_scatter(self, x: torch.Tensor, dim: int, phase: str) -> torch.Tensor:
        """Sum over ranks of ``x``, this rank keeping its chunk along ``dim``."""
        n = self.size
        if n == 1:
            return x
        if not self.live:
            return x.chunk(n, dim=dim)[self.rank].contiguous()
        send = torch.stack(x.chunk(n, dim=dim)).contiguous()
        recv = torch.empty(send.shape[1:], dtype=send.dtype, device=send.device)
        self.counter.add(phase, _nbytes(send) * (n - 1) // n)
        _reduce_scatter_single(recv.view(-1), send.view(-1), op=dist.ReduceOp.SUM, group=self.group)
        return recv

    def exchange(self, x: torch.Tensor, dst: int, src: int, phase: str, wait: bool = True) -> torch.Tensor:
        """Send ``x`` to global rank ``dst`` and receive a tensor like it from ``src``
        (one batched isend/irecv). With ``wait=False`` the transfer is left pending."""
        send = x.contiguous()
        if not self.live:
            return send
        recv = torch.empty_like(send)
        self.counter.add(phase, _nbytes(send))
        ops = [dist.P2POp(dist.isend, send, dst, self.group), dist.P2POp(dist.irecv, recv, src, self.group)]
        works = dist.batch_isend_irecv(ops)
        if wait:
            for w in works:
                w.wait()
        else:
            self._pending[recv.data_ptr()] = (works, send)  # keep the send buffer alive until done
        return recv

    def wait(self, received: torch.Tensor | None = None) -> None:
        """Complete the pending transfer into ``received`` (every pending one when None)."""
        keys = list(self._pending) if received is None else [received.data_ptr()]
        for key in keys:
            works, _ = self._pending.pop(key, ((), None))  # nothing pending: communication is off
            for w in works:
                w.wait()


# -- differentiable versions --------------------------------------------------------------
class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm: Comm, scatter_dim: int, gather_dim: int):
        ctx.comm, ctx.dims = comm, (scatter_dim, gather_dim)
        return comm.all_to_all(x, scatter_dim, gather_dim, "forward")

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return ctx.comm.all_to_all(grad, gather_dim, scatter_dim, "backward"), None, None, None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm: Comm, dim: int):
        ctx.comm, ctx.dim = comm, dim
        return comm.all_gather(x, dim, "forward")

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.reduce_scatter(grad, ctx.dim, "backward"), None, None


def all_to_all(x: torch.Tensor, comm: Comm, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    return x if comm.size == 1 else _AllToAll.apply(x, comm, scatter_dim, gather_dim)


def all_gather(x: torch.Tensor, comm: Comm, dim: int) -> torch.Tensor:
    return x if comm.size == 1 else _AllGather.apply(x, comm, dim)


_GROUPS: dict[tuple[int, ...], object] = {}
_TIMEOUT: list = [None]  # the collective timeout of the world group, for the subgroups


def set_collective_timeout(timeout) -> None:
    """How long a collective of the world group (and of every subgroup made after) may block
    before it raises (a ``datetime.timedelta``)."""
    dist.distributed_c10d._set_pg_timeout(timeout)
    _TIMEOUT[0] = timeout


def subgroups(partition: Sequence[Sequence[int]]):
    """The process group of this rank among ``partition`` (a split of all ranks into groups).

    ``new_group`` is collective over the whole world and must be called in the same order
    everywhere, so every rank creates every group (once per process, cached).
    """
    mine = None
    me = dist.get_rank()
    world = id(dist.group.WORLD)
    for ranks in partition:
        key = (world, *(int(r) for r in ranks))
        if key not in _GROUPS:
            _GROUPS[key] = None if len(key) - 1 == dist.get_world_size() else dist.new_group(list(key[1:]), timeout=_TIMEOUT[0])
        if me in key[1:]:
            mine = _GROUPS[key]
    return mine
