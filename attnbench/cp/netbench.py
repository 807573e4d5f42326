"""`attnbench netbench`: time the collectives the CP methods use, in ranks launched like CP cases.

One launch per world size (attnbench.cp.launch, torchrun's machinery; gloo on CPU, NCCL on
GPUs; several nodes with the same options as `attnbench run`). In every rank
(:func:`run_rank`), for every group layout (``size`` ranks ``stride`` apart: consecutive
ranks stay inside a node, ``stride`` = ranks per node crosses nodes), every collective and
every message size, all groups of the layout run the collective at once, as the methods'
groups do, through attnbench's own :class:`~attnbench.cp.comm.Comm` (the calls the methods
make, counted the same way): ``all_to_all``, ``all_gather``, ``reduce_scatter`` and ``p2p``
(a ring exchange: batched isend to the next member, irecv from the previous one). Each
sample is one call after a barrier; its time is the slowest rank's (the call is done when
every rank has it). The bytes of a point are those the counter saw one rank send.

Then the overlap of a transfer with compute: the same p2p exchange alone, a matmul loop of
about the same duration alone, and both at once (exchange started, matmul, wait);
``hidden = (alone + alone - both) / shorter``, the share of the shorter one that the
other covered (1: perfect overlap, as NCCL on its own stream; 0: serialised; below 0:
slower together than one after the other, as gloo's transfer threads and the compute
fighting over shared CPU cores can be; kept down to -10). And the loop on rank 0 alone while the others wait:
``compute_slowdown`` = every rank at once / one alone, what ranks sharing a node's CPU
cores (and whatever else runs there) cost each other's compute (1 on GPUs, one per rank).

Rank 0 returns a :class:`NetbenchOutcome` with every point; attnbench.advise.network fits
the latency and bandwidth model from it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

OPS = ("all_to_all", "all_gather", "reduce_scatter", "p2p")
SLOWDOWN_LOOP_S = 0.03  # the compute-slowdown loop's length on one rank alone


class LaunchSpec(BaseModel):
    """The fields of a job the CP launcher reads (attnbench.cp.launch.RankJob.cp)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    world_size: int = Field(ge=1)
    timeout_seconds: float = Field(600.0, gt=0)
    ranks_per_node: Optional[int] = Field(None, ge=1)


class GroupLayout(BaseModel):
    """Groups of ``size`` ranks ``stride`` apart, tiling the world."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=2)
    stride: int = Field(1, ge=1)


class NetbenchJob(BaseModel):
    """What every rank of one netbench launch measures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = "cpu"
    cp: LaunchSpec
    layouts: list[GroupLayout]
    ops: list[str] = Field(default_factory=lambda: list(OPS))
    sizes: list[int]  # bytes one rank sends per call (the counter's convention), approximately
    repeats: int = Field(10, ge=1)
    warmup: int = Field(2, ge=0)
    overlap_bytes: int = Field(1 << 20, ge=1)  # the p2p message of the overlap measurement

    def key_id(self) -> str:
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:16]


class NetPoint(BaseModel):
    """One (layout, collective, message size): the slowest rank's time per call."""

    op: str
    size: int  # ranks per group
    stride: int
    spans_nodes: bool
    bytes: int  # sent by one rank per call
    median_s: float
    p20_s: float
    p80_s: float
    samples_s: list[float]


class OverlapPoint(BaseModel):
    bytes: int
    transfer_s: float  # the p2p exchange alone
    compute_s: float  # the matmul loop alone (every rank at once)
    both_s: float  # started together
    hidden: float  # <= 1; below 0: together is slower than one after the other
    solo_compute_s: Optional[float] = None  # a longer loop on rank 0 while the others wait
    compute_slowdown: Optional[float] = None  # that loop on every rank at once / alone (>= 1)


class NetbenchOutcome(BaseModel):
    world_size: int
    ranks_per_node: int
    backend: str
    device: str
    points: list[NetPoint]
    overlap: Optional[OverlapPoint] = None


def default_layouts(world: int, ranks_per_node: int) -> list[GroupLayout]:
    """Powers of two up to the world, consecutive ranks (inside a node while they fit) and,
    across nodes, one rank per node ``ranks_per_node`` apart; the whole world last."""
    layouts, n = [], 2
    while n <= world:
        if world % n == 0:
            layouts.append(GroupLayout(size=n, stride=1))
            if ranks_per_node < world and n * ranks_per_node <= world and ranks_per_node > 1:
                layouts.append(GroupLayout(size=n, stride=ranks_per_node))
        n *= 2
    if world >= 2 and all(layout.size != world for layout in layouts):
        layouts.append(GroupLayout(size=world, stride=1))
    return layouts


def _partition(world: int, layout: GroupLayout) -> list[list[int]]:
    from attnbench.cp.schedule import group_members

    seen, groups = set(), []
    for rank in range(world):
        members = group_members(rank, layout.size, layout.stride)
        if members[0] not in seen:
            seen.add(members[0])
            groups.append(members)
    return groups


def _check_layout(world: int, layout: GroupLayout) -> Optional[str]:
    if world % (layout.size * layout.stride):
        return f"groups of {layout.size} ranks {layout.stride} apart do not tile a world of {world}"
    return None


def _call(op: str, comm, x, peers):
    if op == "all_to_all":
        return comm.all_to_all(x, 0, 0, "forward")
    if op == "all_gather":
        return comm.all_gather(x, 0, "forward")
    if op == "reduce_scatter":
        return comm.reduce_scatter(x, 0, "forward")
    dst, src = peers
    return comm.exchange(x, dst, src, "forward")


def _tensor(op: str, nbytes: int, n: int, device):
    """A float32 tensor with which one rank sends about ``nbytes`` in ``op`` over ``n`` ranks."""
    import torch

    elems = max(1, nbytes // 4)
    if op in ("all_to_all", "reduce_scatter"):
        elems = max(n, -(-elems * n // (n - 1)) // n * n)  # (n-1)/n of it leaves; a multiple of n
    elif op == "all_gather":
        elems = max(1, elems // (n - 1))  # every other rank receives the shard
    return torch.ones(elems, dtype=torch.float32, device=device)


def run_rank(job: NetbenchJob) -> Optional[NetbenchOutcome]:
    """Measure ``job`` on this rank; rank 0 returns the outcome, other ranks None."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from attnbench.cp.comm import Comm, CommCounter, subgroups
    from attnbench.cp.schedule import ring_neighbour

    rank, world = dist.get_rank(), dist.get_world_size()
    cuda = job.device.startswith("cuda")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    per_node = job.cp.ranks_per_node or world
    counter = CommCounter()
    world_comm = Comm(counter)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def timed(fn) -> float:
        sync()
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    mine: list[dict] = []
    for layout in job.layouts:
        reason = _check_layout(world, layout)
        if reason:
            raise ValueError(reason)
        partition = _partition(world, layout)
        group = subgroups(partition)
        comm = world_comm if layout.size == world else world_comm.sub(group)
        members = next(g for g in partition if rank in g)
        spans = len({m // per_node for m in members}) > 1
        peers = (ring_neighbour(rank, layout.size, layout.stride, 1), ring_neighbour(rank, layout.size, layout.stride, -1))
        for op in job.ops:
            for nbytes in job.sizes:
                x = _tensor(op, nbytes, layout.size, device)
                counter.reset()
                _call(op, comm, x, peers)
                sent = counter.bytes["forward"]
                for _ in range(job.warmup):
                    _call(op, comm, x, peers)
                samples = [timed(lambda: _call(op, comm, x, peers)) for _ in range(job.repeats)]
                mine.append({"op": op, "size": layout.size, "stride": layout.stride, "spans": spans,
                             "bytes": sent, "samples": samples})
    overlap = _overlap(job, world_comm, rank, world, device, timed)

    gathered: list = [None] * world
    dist.all_gather_object(gathered, {"points": mine, "overlap": overlap})
    if rank != 0:
        return None
    points = []
    for i, p in enumerate(mine):
        slowest = np.max(np.array([g["points"][i]["samples"] for g in gathered]), axis=0)
        points.append(NetPoint(
            op=p["op"], size=p["size"], stride=p["stride"], spans_nodes=any(g["points"][i]["spans"] for g in gathered),
            bytes=p["bytes"], median_s=float(np.median(slowest)), p20_s=float(np.percentile(slowest, 20)),
            p80_s=float(np.percentile(slowest, 80)), samples_s=[float(s) for s in slowest],
        ))
    return NetbenchOutcome(world_size=world, ranks_per_node=per_node, backend=str(dist.get_backend()),
                           device=job.device, points=points, overlap=_overlap_point(gathered))


run_rank.job_model = NetbenchJob  # attnbench.cp.rank_main parses the job file with it


def _overlap(job: NetbenchJob, comm, rank: int, world: int, device, timed) -> Optional[dict]:
    """This rank's (transfer alone, compute alone, both) medians for the overlap point."""
    import numpy as np
    import torch
    import torch.distributed as dist

    if world < 2:
        return None
    x = _tensor("p2p", job.overlap_bytes, 2, device)
    dst, src = (rank + 1) % world, (rank - 1) % world
    a = torch.randn(256, 256, device=device)

    def transfer():
        comm.exchange(x, dst, src, "forward")

    def matmuls(count):
        def run():
            for _ in range(count):
                torch.matmul(a, a)
        return run

    alone = float(np.median([timed(transfer) for _ in range(job.repeats)]))
    one = float(np.median([timed(matmuls(1)) for _ in range(3)]))
    # every rank runs the same loop (the collectives inside `timed` must match): the largest count
    agreed = torch.tensor([max(1, round(alone / max(one, 1e-9)))], dtype=torch.int64, device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    run = matmuls(int(agreed.item()))

    def both():
        received = comm.exchange(x, dst, src, "forward", wait=False)
        run()
        comm.wait(received)

    # the slowdown of compute shared by the node's ranks: a loop long enough (SLOWDOWN_LOOP_S
    # alone) that every rank is inside it at once, whatever the skew of the barrier's exit
    long_count = torch.tensor([max(1, round(SLOWDOWN_LOOP_S / max(one, 1e-9)))], dtype=torch.int64, device=device)
    dist.all_reduce(long_count, op=dist.ReduceOp.MAX)
    long_run = matmuls(int(long_count.item()))

    def solo():
        if rank == 0:
            long_run()

    compute = float(np.median([timed(run) for _ in range(job.repeats)]))
    together = float(np.median([timed(both) for _ in range(job.repeats)]))
    rounds = max(3, job.repeats // 4)
    alone_on_node = float(np.median([timed(solo) for _ in range(rounds)]))
    all_at_once = float(np.median([timed(long_run) for _ in range(rounds)]))
    return {"bytes": int(x.numel() * x.element_size()), "transfer": alone, "compute": compute, "both": together,
            "solo": alone_on_node if rank == 0 else None, "shared": all_at_once}


def _overlap_point(gathered: list) -> Optional[OverlapPoint]:
    """The slowest rank's figures (each rank's medians; the maximum over ranks)."""
    found = [g["overlap"] for g in gathered if g["overlap"]]
    if not found:
        return None
    transfer = max(f["transfer"] for f in found)
    compute = max(f["compute"] for f in found)
    both = max(f["both"] for f in found)
    shorter = min(transfer, compute)
    hidden = 0.0 if shorter <= 0 else min(1.0, max(-10.0, (transfer + compute - both) / shorter))
    solo = found[0].get("solo")  # rank 0's
    shared = max(f["shared"] for f in found)
    slowdown = max(1.0, shared / solo) if solo else None
    return OverlapPoint(bytes=found[0]["bytes"], transfer_s=transfer, compute_s=compute, both_s=both, hidden=hidden,
                        solo_compute_s=solo, compute_slowdown=slowdown)


# -- the driver: one launch per world size ------------------------------------------------
WORKER = "attnbench.cp.netbench:run_rank"


class NetbenchFailed(RuntimeError):
    """A launch gave no measurements (the message says why, with the ranks' stderr)."""


def measure(job: NetbenchJob, options=None) -> Optional[NetbenchOutcome]:
    """Launch ``job`` on this node (and the others of ``options``); node 0 returns the outcome,
    the other nodes None. Raises :class:`NetbenchFailed` when no outcome came back."""
    import dataclasses

    from attnbench.cp.launch import LaunchOptions, launch_case, placement_problem
    from attnbench.errors import UserError

    options = dataclasses.replace(options or LaunchOptions(), worker=WORKER)
    problem = placement_problem(job, options)
    if problem:
        raise UserError(f"netbench at world size {job.cp.world_size}: {problem}")
    result = launch_case(job, options)
    if result.outcome_text:
        return NetbenchOutcome.model_validate_json(result.outcome_text)
    if options.multi_node and options.node_rank != 0:
        if result.timed_out or result.failures or (result.returncode or 0) != 0:
            raise NetbenchFailed(_why(result))
        return None
    raise NetbenchFailed(_why(result))


def _why(result) -> str:
    if result.timed_out:
        what = f"timed out after {result.timeout_s:.0f} s"
    elif result.failures:
        what = "; ".join(f.describe() for f in result.failures)
    else:
        what = f"the ranks exited with {result.returncode} and no measurements"
    tail = result.stderr_tail.strip().splitlines()[-1:] if result.stderr_tail.strip() else []
    return what + (f" ({tail[0]})" if tail else "")
