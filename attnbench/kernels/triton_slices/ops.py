"""Launching the kernels, and the autograd Function (``slice_attention``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from attnbench.kernels.triton_slices.schedule import Schedule, mask_schedule

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class Config:
    """Tile sizes and launch options. ``block_m x block_n``: forward and dq tiles (query x key);
    ``bwd_block_m x bwd_block_n``: dk/dv tiles. ``deterministic``: dq by its own kernel over
    query blocks (no atomics; bitwise reproducible) instead of atomic adds from the dk/dv kernel."""

    block_m: int = 128
    block_n: int = 64
    bwd_block_m: int = 64
    bwd_block_n: int = 128
    num_warps: int = 4
    num_stages: int = 3
    bwd_num_warps: int = 8
    bwd_num_stages: int = 2
    deterministic: bool = False

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


def default_config(head_dim: int, *, deterministic: bool = False, interpreted: bool = False) -> Config:
    """Defaults for a GPU (FlashAttention-2-like tiles); small tiles in the interpreter (fewer
    wasted elements on partial blocks, and each program runs in Python anyway)."""
    if interpreted:
        return Config(32, 32, 32, 32, deterministic=deterministic)
    # backward: 32 query rows x 128 keys per dk/dv program (dk, dv accumulators of 128 x D
    # in registers), as in Triton's fused-attention tutorial; untuned (no GPU measured yet)
    if head_dim <= 64:
        return Config(128, 64, 32, 128, num_warps=4, num_stages=3, bwd_num_warps=4, deterministic=deterministic)
    if head_dim <= 128:
        return Config(128, 64, 32, 128, num_warps=8, num_stages=3, deterministic=deterministic)
    return Config(64, 32, 32, 64, num_warps=8, num_stages=2, bwd_num_warps=8, bwd_num_stages=1,
                  deterministic=deterministic)


@dataclass
class _DeviceOrientation:
    full_ptr: torch.Tensor
    full_idx: torch.Tensor
    part_ptr: torch.Tensor
    part_idx: torch.Tensor
    part_r0: torch.Tensor
    part_r1: torch.Tensor

    @classmethod
    def of(cls, o, device) -> "_DeviceOrientation":
        def t(a: np.ndarray) -> torch.Tensor:
            # never a zero-size tensor: kernels take pointers
            a = a if len(a) else np.zeros(1, dtype=np.int32)
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(device)

        return cls(t(o.full_ptr), t(o.full_idx), t(o.part_ptr), t(o.part_idx), t(o.part_r0), t(o.part_r1))

    def args(self) -> tuple:
        return (self.full_ptr, self.full_idx, self.part_ptr, self.part_idx, self.part_r0, self.part_r1)


@dataclass
class Plan:
    """Everything the kernels need about one mask, already on the device."""

    config: Config
    seqlen: int
    mask_heads: int
    fwd: Schedule
    bwd: Schedule
    rules: torch.Tensor
    fwd_rule_idx: torch.Tensor
    bwd_rule_idx: torch.Tensor
    by_q: _DeviceOrientation  # fwd schedule, per query block (forward, dq)
    by_k: _DeviceOrientation  # bwd schedule, per key block (dk, dv)
    dq_by_q: _DeviceOrientation  # bwd schedule, per query block (deterministic dq)


def make_plan(mask, heads_q: int, device, config: Config) -> Plan:
    """Schedules of ``mask`` for ``config``'s tiles (host, numpy; cached), copied to ``device``."""
    if mask.heads not in (1, heads_q):
        raise ValueError(f"mask has {mask.heads} heads; expected 1 or heads_q={heads_q}")
    fwd = mask_schedule(mask, config.block_m, config.block_n)
    bwd = mask_schedule(mask, config.bwd_block_m, config.bwd_block_n)

    def idx(a: np.ndarray) -> torch.Tensor:
        a = a if len(a) else np.zeros(1, dtype=np.int32)
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(device)

    return Plan(
        config=config, seqlen=mask.seqlen, mask_heads=mask.heads, fwd=fwd, bwd=bwd,
        rules=idx(fwd.rules.reshape(-1)), fwd_rule_idx=idx(fwd.rule_idx), bwd_rule_idx=idx(bwd.rule_idx),
        by_q=_DeviceOrientation.of(fwd.by_q, device), by_k=_DeviceOrientation.of(bwd.by_k, device),
        dq_by_q=_DeviceOrientation.of(bwd.by_q, device),
    )


def _dot_precision(dtype: torch.dtype) -> str | None:
    # fp32 inputs: exact IEEE products (the fp32 tolerance is 1e-3; TF32 would not meet it);
    # fp16/bf16: the default (the option only concerns fp32 operands)
    return "ieee" if dtype == torch.float32 else None


def _check(q, k, v, plan: Plan) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError("q [B, Hq, S, D], k and v [B, Hkv, S, D] expected")
    B, Hq, S, D = q.shape
    if k.shape[0] != B or k.shape[2] != S or k.shape[3] != D or Hq % k.shape[1]:
        raise ValueError(f"k/v {tuple(k.shape)} do not match q {tuple(q.shape)}")
    if S != plan.seqlen:
        raise ValueError(f"plan is for seqlen {plan.seqlen}, inputs have {S}")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head_dim must be a power of two >= 16, got {D}")


def _forward(q, k, v, plan: Plan, scale: float):
    from attnbench.kernels.triton_slices import kernels as K

    _check(q, k, v, plan)
    B, Hq, S, D = q.shape
    cfg = plan.config
    q, k, v = (t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    lse = torch.empty((B, Hq, S), device=q.device, dtype=torch.float32)
    grid = (plan.fwd.n_qblocks, B * Hq)
    K.fwd_kernel[grid](
        q, k, v, out, lse, plan.rules, plan.fwd_rule_idx, *plan.by_q.args(),
        scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        S, Hq, Hq // k.shape[1], plan.fwd.n_qblocks, int(plan.mask_heads > 1),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=D,
        EVEN_S=(S % cfg.block_m == 0 and S % cfg.block_n == 0), DOT_PREC=_dot_precision(q.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out, lse


def _backward(dout, q, k, v, out, lse, plan: Plan, scale: float, dlse=None):
    from attnbench.kernels.triton_slices import kernels as K

    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    cfg = plan.config
    dout = dout.contiguous()
    delta = torch.empty((B, Hq, S), device=q.device, dtype=torch.float32)
    pre_block = 64
    K.bwd_preprocess_kernel[(triton_cdiv(S, pre_block), B * Hq)](
        out, dout, delta, out.stride(0), out.stride(1), out.stride(2), S, Hq, BLOCK_M=pre_block, HEAD_DIM=D,
    )
    if dlse is not None:
        # d lse / d s_ij = P_ij: folds into dS = P * (dP - delta) as delta - dlse
        delta = delta - dlse.float()
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    atomic = not cfg.deterministic
    dq_acc = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if atomic else q.new_empty(0)
    dqs = dq_acc.stride() if atomic else (0, 0, 0)
    prec = _dot_precision(q.dtype)
    K.bwd_dkdv_kernel[(plan.bwd.n_kblocks, B * Hkv)](
        q, k, v, dout, lse, delta, dk, dv, dq_acc, plan.rules, plan.bwd_rule_idx, *plan.by_k.args(),
        scale * LOG2E, scale,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        dout.stride(0), dout.stride(1), dout.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2),
        dqs[0], dqs[1], dqs[2],
        S, Hq, Hkv, Hq // Hkv, plan.bwd.n_kblocks, int(plan.mask_heads > 1),
        BLOCK_M=cfg.bwd_block_m, BLOCK_N=cfg.bwd_block_n, HEAD_DIM=D,
        EVEN_S=(S % cfg.bwd_block_m == 0 and S % cfg.bwd_block_n == 0), ATOMIC_DQ=atomic, DOT_PREC=prec,
        num_warps=cfg.bwd_num_warps, num_stages=cfg.bwd_num_stages,
    )
    if atomic:
        dq = dq_acc.to(q.dtype)
    else:
        dq = torch.empty_like(q)
        K.bwd_dq_kernel[(plan.bwd.n_qblocks, B * Hq)](
            q, k, v, dout, lse, delta, dq, plan.rules, plan.bwd_rule_idx, *plan.dq_by_q.args(),
            scale * LOG2E, scale,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            dout.stride(0), dout.stride(1), dout.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2),
            S, Hq, Hq // Hkv, plan.bwd.n_qblocks, int(plan.mask_heads > 1),
            BLOCK_M=cfg.bwd_block_m, BLOCK_N=cfg.bwd_block_n, HEAD_DIM=D,
            EVEN_S=(S % cfg.bwd_block_m == 0 and S % cfg.bwd_block_n == 0), DOT_PREC=prec,
            num_warps=cfg.bwd_num_warps, num_stages=cfg.bwd_num_stages,
        )
    return dq, dk, dv


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


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
