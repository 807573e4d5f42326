"""The distributed accuracy check of a CP case: no rank ever holds a global tensor.

Each rank checks its own query rows against every key by streaming the K/V shards around a
ring (uncounted P2P, the next shard in flight while the current one is computed), exactly,
in float64 on CPU (float32 on CUDA), a chunk of rows at a time: online softmax gives the
reference out and lse of its rows. With a backward, a second stream sends the shards around
again with a dK/dV accumulator travelling with each shard (as the ring backward does): dq of
its rows stays home, and every shard comes back with the dK, dV of all queries. Only error
sums are reduced (squared errors and norms SUM, largest error MAX); nothing is gathered.

Cost per rank (:func:`check_flops`): ``(4 + 10 [backward]) * B * Hq * D * rows * S``, i.e.
O(S^2 / W) when every row is checked. When that is predicted above the check's share of the
case budget (:func:`plan_rows`), a deterministic sample of ``rows`` query rows per rank is
checked instead: out and lse on those rows, and the gradients of a loss that only those rows
enter (the accuracy run's dout is zero elsewhere), so dq (zero on the other rows), dk and dv
are still compared exactly, everywhere. The record's ``accuracy.coverage`` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from attnbench.cases import Case
from attnbench.measure.accuracy import ErrorSums, error_sums
from attnbench.measure.blocks import block_backward, block_forward, merge_partials
from attnbench.measure.reference import CHUNK_SCORE_BYTES, reference_dtype

#: share of ``budget.case_seconds`` the accuracy check may take before rows are sampled
CHECK_SHARE = 0.5
#: the reference's rate as a fraction of the float32 matmul rate (float64 on CPU is slower)
REFERENCE_EFFICIENCY = {"cpu": 0.05, "cuda": 0.2}
NAMES = ("out", "lse", "dq", "dk", "dv")


# -- planning: how many rows, predicted before the case ----------------------------------------
def check_flops(case: Case, rows: int) -> float:
    """Reference FLOPs of one rank checking ``rows`` query rows against all S keys."""
    s = case.shape
    per_pair = 4.0 + (10.0 if case.pass_.needs_grad else 0.0)
    return per_pair * s.batch * s.heads_q * s.head_dim * rows * s.seqlen


def check_seconds(case: Case, rows: int, matmul_tflops: dict[str, float]) -> float:
    """Predicted seconds of the check with ``rows`` rows per rank (CPU ranks share the cores)."""
    device = case.device.split(":")[0]
    rate = max(matmul_tflops.get("float32") or 0.01, 1e-3) * 1e12 * REFERENCE_EFFICIENCY.get(device, 0.05)
    ranks_sharing = case.cp.world_size if device == "cpu" else 1
    return check_flops(case, rows) * ranks_sharing / rate


@dataclass(frozen=True)
class RowPlan:
    rows: Optional[int]  # per rank; None = all
    full_seconds: float  # predicted for every row
    seconds: float  # predicted for what will be checked
    budget_seconds: float


def plan_rows(case: Case, matmul_tflops: dict[str, float]) -> RowPlan:
    """All rows when their check fits in its share of the budget, else the most that fit (>= 1)."""
    local = case.shape.seqlen // case.cp.world_size
    budget = CHECK_SHARE * case.budget.case_seconds
    full = check_seconds(case, local, matmul_tflops)
    if not case.check_accuracy or full <= budget:
        return RowPlan(None, full, full if case.check_accuracy else 0.0, budget)
    rows = max(1, min(local, int(local * budget / full)))
    return RowPlan(rows, full, check_seconds(case, rows, matmul_tflops), budget)


def sample_rows(local: int, rows: Optional[int], seed: int, rank: int) -> np.ndarray:
    """The local row indices a rank checks: all, or ``rows`` evenly spread with a seeded offset."""
    if rows is None or rows >= local:
        return np.arange(local)
    offset = np.random.default_rng([seed, rank, 0x5EED]).random()
    return np.unique(np.minimum(((np.arange(rows) + offset) * local / rows).astype(np.int64), local - 1))


def coverage(case: Case, checked_rows: int) -> dict:
    """The record's ``accuracy.coverage``: what the check covered and why."""
    s = case.shape
    local = s.seqlen // case.cp.world_size
    total = checked_rows * case.cp.world_size
    if checked_rows >= local:
        return {"mode": "full", "query_rows": s.seqlen, "of_rows": s.seqlen}
    return {
        "mode": "sampled",
        "query_rows": total,
        "of_rows": s.seqlen,
        "reason": (f"the full check was predicted over {CHECK_SHARE:.0%} of budget.case_seconds: "
                   f"{checked_rows} of {local} rows per rank checked exactly (out, lse on them; dq, dk, dv "
                   "of a loss on them only)"),
    }


# -- running ---------------------------------------------------------------------------------
@dataclass
class Shards:
    """One rank's inputs (local order) and the CP method's results for them."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: Optional[torch.Tensor]  # the dout the CP run was given (zero off the checked rows)
    actual: dict  # name -> tensor: out, lse (may be None), dq, dk, dv


def _row_chunk(q: torch.Tensor, keys: int, itemsize: int) -> int:
    B, H = q.shape[0], q.shape[1]
    return max(1, CHUNK_SCORE_BYTES // max(1, B * H * keys * itemsize))


class _Stream:
    """A tensor sent around the world ring, the next one in flight while this one is used."""

    def __init__(self, world: int, rank: int) -> None:
        self.dst, self.src = (rank + 1) % world, (rank - 1) % world
        self.world = world

    def start(self, x: torch.Tensor):
        if self.world == 1:
            return None
        send = x.contiguous()
        recv = torch.empty_like(send)
        ops = [dist.P2POp(dist.isend, send, self.dst), dist.P2POp(dist.irecv, recv, self.src)]
        return dist.batch_isend_irecv(ops), send, recv

    @staticmethod
    def finish(pending) -> torch.Tensor:
        works, _send, recv = pending
        for w in works:
            w.wait()
        return recv


def reference_of_rows(mask, layout, rank: int, rows: np.ndarray, shards: Shards, scale: float, needs_grad: bool):
    """(out, lse, dq) of the rank's ``rows`` and (dk, dv) of its shard, exact, streamed."""
    world = layout.world
    device = shards.q.device
    dtype = reference_dtype(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    positions = layout.positions(rank)[rows]
    idx = torch.from_numpy(rows).to(device)
    q = shards.q.index_select(2, idx).to(dtype)
    chunk = _row_chunk(q, layout.shard, itemsize)
    row_runs = [_runs_of(positions[a:a + chunk]) for a in range(0, len(rows), chunk)]
    ring = _Stream(world, rank)

    def allowed(c: int, src: int) -> torch.Tensor | None:
        from attnbench.cp.slices import local_mask

        local = local_mask(mask.slices, row_runs[c], layout.runs[src])
        return None if local.empty else local.dense(device)

    kv_in = torch.stack([shards.k, shards.v])
    out = torch.zeros(q.shape, dtype=dtype, device=device)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=dtype, device=device)
    kv = kv_in
    for t in range(world):
        pending = ring.start(kv) if t + 1 < world else None
        src = (rank - t) % world
        k, v = kv[0].to(dtype), kv[1].to(dtype)
        for c, a in enumerate(range(0, len(rows), chunk)):
            ok = allowed(c, src)
            if ok is None:
                continue
            o_t, l_t = block_forward(q[:, :, a:a + chunk], k, v, ok, scale)
            out[:, :, a:a + chunk], lse[:, :, a:a + chunk] = merge_partials(out[:, :, a:a + chunk], lse[:, :, a:a + chunk], o_t, l_t)
        if pending is not None:
            kv = ring.finish(pending)
    result = {"out": out, "lse": lse}
    if not needs_grad:
        return result

    dout = shards.grad_out.index_select(2, idx).to(dtype)
    delta = (dout * out).sum(-1)
    dq = torch.zeros(q.shape, dtype=dtype, device=device)
    kv, acc_in = kv_in, None
    for t in range(world):
        pending = ring.start(kv) if t + 1 < world else None
        src = (rank - t) % world
        k, v = kv[0].to(dtype), kv[1].to(dtype)
        acc = torch.zeros((2, *k.shape), dtype=dtype, device=device)
        for c, a in enumerate(range(0, len(rows), chunk)):
            ok = allowed(c, src)
            if ok is None:
                continue
            s = slice(a, a + chunk)
            dq_c, dk_c, dv_c = block_backward(q[:, :, s], k, v, lse[:, :, s], delta[:, :, s], dout[:, :, s], ok, scale)
            dq[:, :, s] += dq_c
            acc[0] += dk_c
            acc[1] += dv_c
        if acc_in is not None:
            acc += ring.finish(acc_in)
        acc_in = ring.start(acc)
        if pending is not None:
            kv = ring.finish(pending)
    dkv = acc if acc_in is None else ring.finish(acc_in)
    result.update(dq=dq, dk=dkv[0], dv=dkv[1])
    return result


def _runs_of(positions: np.ndarray) -> np.ndarray:
    from attnbench.cp.slices import merge_runs

    return merge_runs(np.stack([positions, positions + 1], axis=1))


def local_errors(reference: dict, shards: Shards, rows: np.ndarray) -> dict[str, ErrorSums]:
    """This rank's error sums per tensor (rows-only for out, lse; every row for dq, dk, dv)."""
    idx = torch.from_numpy(rows).to(shards.q.device)
    sums: dict[str, ErrorSums] = {}
    for name in ("out", "lse"):
        actual = shards.actual.get(name)
        if actual is not None:
            sums[name] = error_sums(actual.index_select(2, idx), reference[name])
    if "dq" in reference:
        dq = torch.zeros(shards.q.shape, dtype=reference["dq"].dtype, device=shards.q.device)
        dq.index_copy_(2, idx, reference["dq"])
        sums["dq"] = error_sums(shards.actual["dq"], dq)
        sums["dk"] = error_sums(shards.actual["dk"], reference["dk"])
        sums["dv"] = error_sums(shards.actual["dv"], reference["dv"])
    return sums


def reduce_errors(sums: dict[str, ErrorSums], device) -> dict[str, ErrorSums]:
    """The world's error sums (every rank gets them): two all-reduces of a few numbers."""
    names = [n for n in NAMES if n in sums]
    added = torch.tensor([[sums[n].sq_err, sums[n].sq_ref] for n in names], dtype=torch.float64, device=device)
    maxed = torch.tensor([[sums[n].max_abs, float(sums[n].nan_diff), float(sums[n].has_nan)] for n in names],
                         dtype=torch.float64, device=device)
    dist.all_reduce(added, op=dist.ReduceOp.SUM)
    dist.all_reduce(maxed, op=dist.ReduceOp.MAX)
    added, maxed = added.cpu().tolist(), maxed.cpu().tolist()
    return {n: ErrorSums(sq_err=a[0], sq_ref=a[1], max_abs=m[0], nan_diff=m[1] > 0, has_nan=m[2] > 0)
            for n, a, m in zip(names, added, maxed)}


def tolerance_factor(world: int) -> float:
    """Tolerance multiplier at world size W: sqrt(W) (1 on one rank): rounding grows with the
    number of partial results merged, while a wrong merge or slice errs by order one."""
    return math.sqrt(max(1, world))
