"""Reference attention: exact, chunked over queries, with an analytic backward.

Inputs are cast to float64 on CPU and float32 on CUDA. Scores are computed for one
chunk of query rows against all keys at a time, so memory is O(B * Hq * chunk * S),
never O(S^2). The mask is rendered one chunk of rows at a time through ``rows_fn``
(default :func:`attnbench.masks.convert.dense_rows`), ``[mask.heads, rows, S]`` with
True = allowed; ``mask.heads`` is 1 (broadcast over heads) or Hq (one mask per query
head). GQA: query head ``h`` uses kv head ``h // (Hq // Hkv)``; the computation groups
the query heads of a kv head together instead of copying k and v.

Backward (when ``grad_out`` is given), per chunk, without autograd::

    Delta = rowsum(dO * O);  P = exp(scores - lse)
    dV += P^T dO;  dP = dO V^T;  dS = P * (dP - Delta)
    dQ = dS K * scale;  dK += dS^T Q * scale

dK and dV come out summed over each GQA group, ``[B, Hkv, S, D]``.

A query row with no allowed key gets lse = -inf, out = 0 and zero gradients (no NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

#: Target size of one chunk's score matrix.
CHUNK_SCORE_BYTES = 128 * 1024 * 1024


@dataclass
class Reference:
    out: torch.Tensor
    lse: torch.Tensor
    dq: torch.Tensor | None = None
    dk: torch.Tensor | None = None
    dv: torch.Tensor | None = None


def reference_dtype(device: torch.device | str) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "cuda" else torch.float64


def default_chunk(batch: int, heads_q: int, seqlen: int, itemsize: int, budget_bytes: int = CHUNK_SCORE_BYTES) -> int:
    """Rows per chunk so that one chunk's scores take at most ``budget_bytes`` (at least 1 row)."""
    per_row = max(1, batch * heads_q * seqlen * itemsize)
    return max(1, min(seqlen, budget_bytes // per_row))


def _default_rows_fn():
    from attnbench.masks.convert import dense_rows  # lazy: the masks package is optional here

    return dense_rows


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Any,
    *,
    grad_out: torch.Tensor | None = None,
    scale: float | None = None,
    chunk: int | None = None,
    rows_fn: Callable[..., torch.Tensor] | None = None,
) -> Reference:
    """Exact masked attention of q [B, Hq, S, D], k and v [B, Hkv, S, D]; see the module docstring."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D [B, H, S, D]")
    B, Hq, S, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} differ")
    Bk, Hkv, Sk, Dk = k.shape
    if Bk != B or Sk != S or Dk != D:
        raise ValueError(f"k/v shape {tuple(k.shape)} does not match q {tuple(q.shape)}")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"heads_q={Hq} is not a multiple of heads_kv={Hkv}")
    if grad_out is not None and grad_out.shape != q.shape:
        raise ValueError(f"grad_out {tuple(grad_out.shape)} does not match q {tuple(q.shape)}")
    mask_heads = int(getattr(mask, "heads", 1))
    if mask_heads not in (1, Hq):
        raise ValueError(f"mask has {mask_heads} heads; expected 1 or heads_q={Hq}")
    mask_seqlen = getattr(mask, "seqlen", None)
    if mask_seqlen is not None and int(mask_seqlen) != S:
        raise ValueError(f"mask seqlen {mask_seqlen} does not match sequence length {S}")
    if rows_fn is None:
        rows_fn = _default_rows_fn()

    device = q.device
    dtype = reference_dtype(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if chunk is None:
        chunk = default_chunk(B, Hq, S, itemsize)
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    g = Hq // Hkv

    with torch.no_grad():
        qf = q.detach().to(device=device, dtype=dtype)
        kf = k.detach().to(device=device, dtype=dtype)
        vf = v.detach().to(device=device, dtype=dtype)
        # grouped views: [B, Hkv, g, S, D]; head h = kv * g + j
        qg = qf.reshape(B, Hkv, g, S, D)
        kt = kf.transpose(-1, -2).unsqueeze(2)  # [B, Hkv, 1, D, S]
        vg = vf.unsqueeze(2)  # [B, Hkv, 1, S, D]

        out = torch.empty(B, Hkv, g, S, D, dtype=dtype, device=device)
        lse = torch.empty(B, Hkv, g, S, dtype=dtype, device=device)
        backward = grad_out is not None
        if backward:
            dog = grad_out.detach().to(device=device, dtype=dtype).reshape(B, Hkv, g, S, D)
            dq = torch.empty(B, Hkv, g, S, D, dtype=dtype, device=device)
            dk = torch.zeros(B, Hkv, S, D, dtype=dtype, device=device)
            dv = torch.zeros(B, Hkv, S, D, dtype=dtype, device=device)
            kk = kf  # [B, Hkv, S, D]

        for a in range(0, S, chunk):
            b = min(S, a + chunk)
            c = b - a
            q_c = qg[:, :, :, a:b, :]  # [B, Hkv, g, c, D]
            scores = torch.matmul(q_c, kt) * scale  # [B, Hkv, g, c, S]

            rows = rows_fn(mask, a, b, device=device)
            rows = torch.as_tensor(rows, device=device).to(torch.bool)
            if rows.dim() == 2:
                rows = rows.unsqueeze(0)
            if rows.shape != (mask_heads, c, S):
                raise ValueError(f"rows_fn returned {tuple(rows.shape)}, expected {(mask_heads, c, S)}")
            allowed = rows.reshape(1, Hkv, g, c, S) if mask_heads == Hq else rows.reshape(1, 1, 1, c, S)
            scores.masked_fill_(~allowed, float("-inf"))

            lse_c = torch.logsumexp(scores, dim=-1)  # [B, Hkv, g, c]; -inf for empty rows
            lse_safe = torch.where(torch.isfinite(lse_c), lse_c, torch.zeros_like(lse_c))
            p = scores.sub_(lse_safe.unsqueeze(-1)).exp_()  # in place; exp(-inf) = 0 on masked entries
            del scores
            o_c = torch.matmul(p, vg)  # [B, Hkv, g, c, D]
            out[:, :, :, a:b, :] = o_c
            lse[:, :, :, a:b] = lse_c

            if backward:
                do_c = dog[:, :, :, a:b, :]
                delta = (do_c * o_c).sum(dim=-1, keepdim=True)  # [B, Hkv, g, c, 1]
                # dV += P^T dO, summed over the g query heads of each kv head and the chunk rows
                dv += torch.matmul(p.reshape(B, Hkv, g * c, S).transpose(-1, -2), do_c.reshape(B, Hkv, g * c, D))
                dp = torch.matmul(do_c, vg.transpose(-1, -2))  # [B, Hkv, g, c, S]
                ds = p.mul_(dp.sub_(delta))
                del dp
                dq[:, :, :, a:b, :] = torch.matmul(ds, kk.unsqueeze(2)) * scale
                dk += torch.matmul(ds.reshape(B, Hkv, g * c, S).transpose(-1, -2), q_c.reshape(B, Hkv, g * c, D)) * scale
                del ds
            del p

        ref = Reference(out=out.reshape(B, Hq, S, D), lse=lse.reshape(B, Hq, S))
        if backward:
            ref.dq = dq.reshape(B, Hq, S, D)
            ref.dk = dk
            ref.dv = dv
    return ref
