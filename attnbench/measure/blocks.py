"""Exact attention of a block of query rows against a block of keys, for references that
stream the keys (attnbench.cp.check): forward partials, their log-sum-exp merge, and the
block's backward from the final lse. The math of attnbench.measure.reference, a block at a
time, in the dtype of the inputs (float64 on CPU, float32 on CUDA for references).

Shapes: q, dout ``[B, Hq, R, D]``, k, v ``[B, Hkv, C, D]``, allowed ``[R, C]`` bool (True =
allowed, shared by every head), lse and delta ``[B, Hq, R]``. GQA: query head ``h`` reads kv
head ``h // (Hq // Hkv)``; dk, dv come out summed over each group.
"""

from __future__ import annotations

import torch


def _grouped(q: torch.Tensor, heads_kv: int) -> torch.Tensor:
    B, Hq, R, D = q.shape
    return q.reshape(B, heads_kv, Hq // heads_kv, R, D)


def _scores(q, k, allowed, scale):
    qg = _grouped(q, k.shape[1])
    scores = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)).mul_(scale)  # [B, Hkv, g, R, C]
    return scores.masked_fill_(~allowed, float("-inf"))


@torch.no_grad()
def block_forward(q, k, v, allowed, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out ``[B, Hq, R, D]``, lse ``[B, Hq, R]``) over this block's allowed keys; rows with none:
    out 0, lse -inf."""
    B, Hq, R, D = q.shape
    scores = _scores(q, k, allowed, scale)
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    p = scores.sub_(safe.unsqueeze(-1)).exp_()
    out = torch.matmul(p, v.unsqueeze(2))
    return out.reshape(B, Hq, R, D), lse.reshape(B, Hq, R)


@torch.no_grad()
def merge_partials(out, lse, out2, lse2) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-sum-exp merge of two partial results (dtype kept; NaN-free for -inf rows)."""
    m = torch.maximum(lse, lse2)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1, w2 = torch.exp(lse - m), torch.exp(lse2 - m)
    s = w1 + w2
    has = s > 0
    s_safe = torch.where(has, s, torch.ones_like(s))
    merged = out * (w1 / s_safe).unsqueeze(-1) + out2 * (w2 / s_safe).unsqueeze(-1)
    return merged, torch.where(has, m + torch.log(s_safe), torch.full_like(s, float("-inf")))


@torch.no_grad()
def block_backward(q, k, v, lse, delta, dout, allowed, scale: float):
    """(dq ``[B, Hq, R, D]``, dk, dv ``[B, Hkv, C, D]``) of this block, from the FINAL lse of
    the rows and ``delta = rowsum(dout * out)``: P = exp(S - lse), dS = P (dO V^T - delta)."""
    B, Hq, R, D = q.shape
    Hkv = k.shape[1]
    g = Hq // Hkv
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)).reshape(B, Hkv, g, R, 1)
    p = _scores(q, k, allowed, scale).sub_(safe).exp_()
    do = _grouped(dout, Hkv)
    dv = torch.matmul(p.transpose(-1, -2), do).sum(2)
    ds = p.mul_(torch.matmul(do, v.unsqueeze(2).transpose(-1, -2)).sub_(delta.reshape(B, Hkv, g, R, 1)))
    dq = torch.matmul(ds, k.unsqueeze(2)).mul_(scale).reshape(B, Hq, R, D)
    dk = torch.matmul(ds.transpose(-1, -2), _grouped(q, Hkv)).sum(2).mul_(scale)
    return dq, dk, dv
