"""Launching the kernels, and the autograd Function (``slice_attention``).

Every launch is first built as a :class:`~attnbench.kernels.triton_launch.TritonLaunch`
(jit function, grid, arguments, constexprs, warps, stages) and then called; ``attnbench
inspect`` compiles the very same launches for a target without running them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnbench.kernels.triton_launch import TritonLaunch
from attnbench.kernels.triton_slices.configs import Config, Tiles
from attnbench.kernels.triton_slices.schedule import Programs, build_programs, mask_schedule

LOG2E = 1.4426950408889634
INT32_MAX = 2**31 - 1
#: resident dk/dv programs the split of heavy rows aims at when the device is unknown (H100 SXM: 132 SMs)
DEFAULT_SLOTS = 132


@dataclass
class DevicePrograms:
    """:class:`Programs` on the device (never a zero-size tensor: kernels take pointers)."""

    programs: Programs
    prog: torch.Tensor
    runs: torch.Tensor
    parts: torch.Tensor
    splits: torch.Tensor

    @classmethod
    def of(cls, p: Programs, device) -> "DevicePrograms":
        def t(a: np.ndarray, width: int) -> torch.Tensor:
            a = a if len(a) else np.zeros((1, width), dtype=np.int32)
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(device)

        return cls(p, t(p.prog, 8), t(p.runs, 4), t(p.parts, 8), t(p.splits, 4))

    @property
    def count(self) -> int:
        return self.programs.count

    def select(self, keep) -> "DevicePrograms":
        """Only some programs (see :meth:`Programs.select`), on the same device."""
        return DevicePrograms.of(self.programs.select(keep), self.prog.device)


@dataclass
class Plan:
    """Everything the kernels need about one mask and head layout, already on the device."""

    config: Config
    seqlen: int
    mask_heads: int
    heads_q: int
    heads_kv: int
    fwd: DevicePrograms  # per query block (forward tiles)
    dkdv: DevicePrograms  # per key block and kv head (dk/dv tiles)
    dq: DevicePrograms | None  # per query block (dq tiles; deterministic backward only)

    @property
    def group(self) -> int:
        return self.heads_q // self.heads_kv

    def q_replicas(self) -> int:
        """Query heads that share one program list: all of them, unless the mask is per head."""
        return self.heads_q if self.mask_heads == 1 else 1

    def kv_replicas(self) -> int:
        return self.heads_kv if self.mask_heads == 1 else 1


def make_plan(mask, heads_q: int, heads_kv: int, device, config: Config, *, batch: int = 1,
              slots: int | None = None) -> Plan:
    """Schedules of ``mask`` for ``config``'s tiles (host, numpy; cached) and the programs of
    every launch, copied to ``device``. ``slots``: resident dk/dv programs of the device, for
    the split of heavy rows (default: the device's SM count, else :data:`DEFAULT_SLOTS`)."""
    if mask.heads not in (1, heads_q):
        raise ValueError(f"mask has {mask.heads} heads; expected 1 or heads_q={heads_q}")
    if heads_kv < 1 or heads_q % heads_kv:
        raise ValueError(f"heads_q={heads_q} must be a multiple of heads_kv={heads_kv}")
    group = heads_q // heads_kv
    per_head = mask.heads > 1
    if slots is None:
        slots = _sm_count(device)

    def per_query_block(tiles: Tiles) -> DevicePrograms:
        schedule = mask_schedule(mask, tiles.block_m, tiles.block_n)
        return DevicePrograms.of(build_programs(schedule, "by_q", mask.heads, 1), device)

    dkdv_schedule = mask_schedule(mask, config.dkdv.block_m, config.dkdv.block_n)
    dkdv = DevicePrograms.of(
        build_programs(dkdv_schedule, "by_k", heads_kv if per_head else 1, group,
                       replicas=batch * (1 if per_head else heads_kv), split_slots=slots if config.split else None),
        device)
    fwd = per_query_block(config.forward)
    dq = per_query_block(config.dq) if config.deterministic else None
    return Plan(config=config, seqlen=mask.seqlen, mask_heads=mask.heads, heads_q=heads_q, heads_kv=heads_kv,
                fwd=fwd, dkdv=dkdv, dq=dq)


def _sm_count(device) -> int:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SLOTS


def _dot_precision(dtype: torch.dtype, config: Config) -> str | None:
    # fp32 inputs: the config's precision (one TF32 product would miss the fp32 tolerance of
    # 1e-3; tf32x3 and ieee meet it); fp16/bf16: the default (the option concerns fp32 only)
    return config.fp32_precision if dtype == torch.float32 else None


def check_shapes(q, k, v, plan: Plan) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError("q [B, Hq, S, D], k and v [B, Hkv, S, D] expected")
    B, Hq, S, D = q.shape
    if k.shape[0] != B or k.shape[2] != S or k.shape[3] != D or Hq % k.shape[1]:
        raise ValueError(f"k/v {tuple(k.shape)} do not match q {tuple(q.shape)}")
    if S != plan.seqlen or Hq != plan.heads_q or k.shape[1] != plan.heads_kv:
        raise ValueError(f"plan is for seqlen {plan.seqlen} and heads {plan.heads_q}:{plan.heads_kv}, "
                         f"inputs have {S} and {Hq}:{k.shape[1]}")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head_dim must be a power of two >= 16, got {D}")
    check_offsets(S, q, k, v)


def check_offsets(S: int, *tensors) -> None:
    """Within one head the kernels address ``token * stride`` in int32 (batch and head parts
    are int64): refuse what would overflow instead of reading the wrong memory."""
    for t in tensors:
        if (S - 1) * t.stride(2) + t.shape[3] > INT32_MAX:
            raise ValueError(f"one head of {S} tokens x stride {t.stride(2)} exceeds 2**31 elements "
                             "(int32 offsets within a head)")


def tile_operand(t: torch.Tensor, rows: int, tma: bool):
    """What a kernel loads [rows, D] tiles of ``t`` [B, H, S, D] from, seen as [B * H, S, D]:
    a tensor descriptor (TMA; rows past S read as zeros) or the tensor itself (pointers)."""
    B, H, S, D = t.shape
    if t.stride(3) != 1 or t.stride(0) != H * t.stride(1):
        raise ValueError("q, k, v, do must have contiguous heads and a contiguous last dim")
    if not tma:
        return t
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, [B * H, S, D], [t.stride(1), t.stride(2), 1], [1, rows, D])


def _row_strides(*tensors) -> tuple[int, ...]:
    """(head-row stride, token stride) of each [B, H, S, D] tensor, for the pointer path."""
    return tuple(x for t in tensors for x in (t.stride(1), t.stride(2)))


def _even(S: int, tiles: Tiles) -> bool:
    return S % tiles.block_m == 0 and S % tiles.block_n == 0


def _launch_options(tiles: Tiles) -> dict:
    return {"num_warps": tiles.num_warps, "num_stages": tiles.stages}


def forward_launch(q, k, v, out, lse, plan: Plan, scale: float) -> TritonLaunch:
    from attnbench.kernels.triton_slices import kernels as K

    B, Hq, S, D = q.shape
    t = plan.config.forward
    replicas = plan.q_replicas()
    tma = plan.config.tma
    return TritonLaunch(
        "forward", K.fwd_kernel, (plan.fwd.count * B * replicas,),
        (tile_operand(q, t.block_m, tma), tile_operand(k, t.block_n, tma), tile_operand(v, t.block_n, tma), out, lse,
         plan.fwd.prog, plan.fwd.runs, plan.fwd.parts, scale * LOG2E, *_row_strides(q, k, v),
         out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
         S, Hq, k.shape[1], replicas, B * replicas, plan.group),
        dict(BLOCK_M=t.block_m, BLOCK_N=t.block_n, HEAD_DIM=D, EVEN_S=_even(S, t), DOT_PREC=_dot_precision(q.dtype, plan.config),
             STAGES=t.stages, PART_STAGES=t.part_stages, TMA=tma),
        config=t.describe(), **_launch_options(t),
    )


def delta_launch(out, dout, delta, dlse, BLOCK: int = 64) -> TritonLaunch:
    from attnbench.kernels.triton_slices import kernels as K

    B, Hq, S, D = out.shape
    return TritonLaunch(
        "delta", K.bwd_preprocess_kernel, (-(-S // BLOCK), B * Hq),
        (out, dout, delta, dlse if dlse is not None else delta,
         out.stride(0), out.stride(1), out.stride(2), dout.stride(0), dout.stride(1), dout.stride(2),
         delta.stride(0), delta.stride(1), S, Hq),
        dict(BLOCK_M=BLOCK, HEAD_DIM=D, HAS_DLSE=dlse is not None), num_warps=8, num_stages=1,
        config={"block_m": BLOCK},
    )


def dkdv_launch(q, k, v, dout, lse, delta, dk, dv, dq_acc, parts, plan: Plan, scale: float) -> TritonLaunch:
    from attnbench.kernels.triton_slices import kernels as K

    B, Hq, S, D = q.shape
    t = plan.config.dkdv
    replicas = plan.kv_replicas()
    atomic = not plan.config.deterministic
    dqs = dq_acc.stride() if atomic else (0, 0, 0)
    tma = plan.config.tma
    return TritonLaunch(
        "dkdv", K.bwd_dkdv_kernel, (plan.dkdv.count * B * replicas,),
        (tile_operand(q, t.block_m, tma), tile_operand(k, t.block_n, tma), tile_operand(v, t.block_n, tma),
         tile_operand(dout, t.block_m, tma), lse, delta, dk, dv, dq_acc, parts,
         plan.dkdv.prog, plan.dkdv.runs, plan.dkdv.parts, scale * LOG2E, scale, *_row_strides(q, k, v, dout),
         dk.stride(0), dk.stride(1), dk.stride(2), dqs[0], dqs[1], dqs[2], lse.stride(0), lse.stride(1),
         S, Hq, k.shape[1], replicas, B * replicas, plan.group),
        dict(BLOCK_M=t.block_m, BLOCK_N=t.block_n, HEAD_DIM=D, EVEN_S=_even(S, t), ATOMIC_DQ=atomic,
             DOT_PREC=_dot_precision(q.dtype, plan.config), STAGES=t.stages, PART_STAGES=t.part_stages, TMA=tma),
        config=t.describe(), **_launch_options(t),
    )


def dkdv_reduce_launch(dk, dv, parts, plan: Plan, scale: float) -> TritonLaunch:
    from attnbench.kernels.triton_slices import kernels as K

    B, Hkv, S, D = dk.shape
    t = plan.config.dkdv
    replicas = plan.kv_replicas()
    n_splits = len(plan.dkdv.programs.splits)
    return TritonLaunch(
        "dkdv_reduce", K.bwd_dkdv_reduce_kernel, (n_splits * B * replicas,),
        (dk, dv, parts, plan.dkdv.splits, scale, dk.stride(0), dk.stride(1), dk.stride(2), S, replicas, B * replicas),
        dict(BLOCK_N=t.block_n, HEAD_DIM=D), num_warps=8, num_stages=1, config={"block_n": t.block_n},
    )


def dq_launch(q, k, v, dout, lse, delta, dq, plan: Plan, scale: float) -> TritonLaunch:
    from attnbench.kernels.triton_slices import kernels as K

    B, Hq, S, D = q.shape
    t = plan.config.dq
    replicas = plan.q_replicas()
    assert plan.dq is not None, "the plan has no dq programs (not deterministic)"
    tma = plan.config.tma
    return TritonLaunch(
        "dq", K.bwd_dq_kernel, (plan.dq.count * B * replicas,),
        (tile_operand(q, t.block_m, tma), tile_operand(k, t.block_n, tma), tile_operand(v, t.block_n, tma),
         tile_operand(dout, t.block_m, tma), lse, delta, dq, plan.dq.prog, plan.dq.runs, plan.dq.parts,
         scale * LOG2E, scale, *_row_strides(q, k, v, dout), dq.stride(0), dq.stride(1), dq.stride(2), lse.stride(0), lse.stride(1),
         S, Hq, k.shape[1], replicas, B * replicas, plan.group),
        dict(BLOCK_M=t.block_m, BLOCK_N=t.block_n, HEAD_DIM=D, EVEN_S=_even(S, t), DOT_PREC=_dot_precision(q.dtype, plan.config),
             STAGES=t.stages, PART_STAGES=t.part_stages, TMA=tma),
        config=t.describe(), **_launch_options(t),
    )


def forward_outputs(q):
    B, Hq, S, D = q.shape
    return torch.empty_like(q), torch.empty((B, Hq, S), device=q.device, dtype=torch.float32)


def backward_buffers(q, k, plan: Plan):
    """(delta, dk, dv, dq_acc or dq, dk/dv partial sums) for one backward."""
    B, Hq, S, D = q.shape
    delta = torch.empty((B, Hq, S), device=q.device, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(k)
    if plan.config.deterministic:
        dq = torch.empty_like(q)
    else:
        dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    slots = plan.dkdv.programs.n_slots
    parts = torch.empty((max(slots, 1), B * plan.kv_replicas(), 2, plan.config.dkdv.block_n, D), device=q.device,
                        dtype=torch.float32)
    return delta, dk, dv, dq, parts


def backward_launches(dout, q, k, v, out, lse, plan: Plan, scale: float, dlse=None):
    """The launches of one backward, in order, and the (dq, dk, dv) tensors they fill (dq in
    float32 with the atomic variant: cast after the launches)."""
    delta, dk, dv, dq, parts = backward_buffers(q, k, plan)
    launches = [delta_launch(out, dout, delta, dlse),
                dkdv_launch(q, k, v, dout, lse, delta, dk, dv, dq, parts, plan, scale)]
    if len(plan.dkdv.programs.splits):
        launches.append(dkdv_reduce_launch(dk, dv, parts, plan, scale))
    if plan.config.deterministic:
        launches.append(dq_launch(q, k, v, dout, lse, delta, dq, plan, scale))
    return launches, (dq, dk, dv)


def declared_launches(query, config: Config) -> list[TritonLaunch]:
    """The launches of one forward and/or backward for a :class:`~attnbench.kernels.triton_launch.LaunchQuery`
    (its mask, shape and dtype; tensors on ``query.device``, e.g. ``meta`` to compile offline) with ``config``."""
    from attnbench.cases import torch_dtype
    from attnbench.kernels.base import default_scale
    from attnbench.masks import MASKS, build_mask

    mask = build_mask(query.mask, query.seqlen, {}, heads=query.heads_q if MASKS.get(query.mask).dynamic else 1)
    B, Hq, Hkv, S, D = query.batch, query.heads_q, query.heads_kv, query.seqlen, query.head_dim
    dtype = torch_dtype(query.dtype)
    q = torch.zeros(B, Hq, S, D, dtype=dtype, device=query.device)
    k, v = (torch.zeros(B, Hkv, S, D, dtype=dtype, device=query.device) for _ in range(2))
    plan = make_plan(mask, Hq, Hkv, query.device, config, batch=B,
                     slots=DEFAULT_SLOTS if query.device == "meta" else None)
    check_shapes(q, k, v, plan)
    out, lse = forward_outputs(q)
    scale = default_scale(D)
    launches = []
    if "forward" in query.passes:
        launches.append(forward_launch(q, k, v, out, lse, plan, scale))
    if "backward" in query.passes:
        launches += backward_launches(torch.zeros_like(out), q, k, v, out, lse, plan, scale)[0]
    return launches


def _forward(q, k, v, plan: Plan, scale: float):
    check_shapes(q, k, v, plan)
    q, k, v = (t.contiguous() for t in (q, k, v))
    out, lse = forward_outputs(q)
    forward_launch(q, k, v, out, lse, plan, scale)()
    return out, lse


def _backward(dout, q, k, v, out, lse, plan: Plan, scale: float, dlse=None):
    dout = dout.contiguous()
    check_offsets(q.shape[2], dout)
    if dlse is not None:
        dlse = dlse.float().contiguous()
    launches, (dq, dk, dv) = backward_launches(dout, q, k, v, out, lse, plan, scale, dlse)
    for launch in launches:
        launch()
    return dq.to(q.dtype), dk, dv


class SliceAttention(torch.autograd.Function):
    """(q, k, v) -> (out, lse) with the slice-driven Triton forward and backward."""

    @staticmethod
    def forward(ctx, q, k, v, plan: Plan, scale: float):
        out, lse = _forward(q, k, v, plan, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = _backward(dout, q.contiguous(), k.contiguous(), v.contiguous(), out, lse, ctx.plan, ctx.scale,
                               dlse)
        return dq, dk, dv, None, None


def slice_attention(q, k, v, plan: Plan, scale: float):
    """Masked attention of q ``[B, Hq, S, D]`` to k, v ``[B, Hkv, S, D]``; returns (out, lse)."""
    return SliceAttention.apply(q, k, v, plan, scale)
