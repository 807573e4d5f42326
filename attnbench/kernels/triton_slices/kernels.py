"""The Triton kernels of ``triton_slices`` (FlashAttention-2 style, slice-driven), v2.

Importing this module compiles nothing; it defines the jitted functions. Whether they run
compiled or in Triton's interpreter is decided by ``TRITON_INTERPRET`` at import time
(recorded in :data:`INTERPRETED`).

Layout: q, o, do ``[B, Hq, S, D]``; k, v ``[B, Hkv, S, D]`` (last dim contiguous); lse and
delta ``[B, Hq, S]`` float32 (lse in natural log). Scores are kept in the log2 domain
(``qk * scale * log2(e)``) and exponentiated with ``exp2``.

Work comes from ``schedule.py`` (:class:`~attnbench.kernels.triton_slices.schedule.Programs`):
program ``pid // N_AX`` of the list (heaviest first), for batch x head ``pid % N_AX`` (so the
heaviest program of every head starts first). Each program walks its RUNS of full blocks
(``for blk in [lo, hi)``: affine addresses, no mask, pipelined with ``STAGES`` buffers) and
then its PARTIAL entries (one rule each, fields inline: one pipelined loop, no inner loop).

Loads of q, k, v and do go through tensor descriptors over ``[B * H, S, D]`` (TMA on sm90
and later: no per-element address registers, zero fill past ``S``; plain loads on sm80, where
Triton rewrites them). Other addresses have int64 batch and head parts (``head x S x D``
passes 2^31 at 1M tokens and 16 heads); within one head, token x stride stays int32 (the
host checks that it fits). Atomic dq adds are relaxed: only their sum matters.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton import knobs

INTERPRETED: bool = bool(knobs.runtime.interpret)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _rule(qi, kj, q0, q1, k0, k1, lo, hi):
    """``q0 <= qi < q1 & k0 <= kj < k1 & lo <= kj - qi <= hi`` for broadcastable index tensors."""
    d = kj - qi
    return (qi >= q0) & (qi < q1) & (kj >= k0) & (kj < k1) & (d >= lo) & (d <= hi)


@triton.jit
def _load_rule(ent):
    return (tl.load(ent + 2), tl.load(ent + 3), tl.load(ent + 4), tl.load(ent + 5), tl.load(ent + 6),
            tl.load(ent + 7))


@triton.jit
def _tile(X, stride_row, stride_s, row, start, S, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, TMA: tl.constexpr,
          EVEN_S: tl.constexpr):
    """Rows ``start .. start + ROWS`` of head-row ``row`` of ``X`` ([B * H, S, D]), zeros past S:
    through a tensor descriptor (TMA) or, on sm80, through pointers (strides in elements)."""
    if TMA:
        return X.load([row, start, 0]).reshape(ROWS, HEAD_DIM)
    else:
        offs = start + tl.arange(0, ROWS)
        ptrs = X + row.to(tl.int64) * stride_row + offs[:, None] * stride_s + tl.arange(0, HEAD_DIM)[None, :]
        if EVEN_S:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=offs[:, None] < S, other=0.0)


@triton.jit
def _fwd_block(acc, m_i, l_i, q, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row, kb, offs_m, S, qk_scale,
               q0, q1, k0, k1, lo, hi,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
               DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _tile(K, stride_kh, stride_ks, kv_row, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    v = _tile(V, stride_vh, stride_vs, kv_row, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    if MASKED:
        s = tl.where(_rule(offs_m[:, None], offs_n[None, :], q0, q1, k0, k1, lo, hi), s, float("-inf"))
    elif not EVEN_S:
        s = tl.where(offs_n[None, :] < S, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    return acc, m_new, l_i


@triton.jit
def fwd_kernel(Q, K, V, O, LSE, PROG, RUNS, PARTS,
               qk_scale,
               stride_qh, stride_qs, stride_kh, stride_ks, stride_vh, stride_vs,
               stride_ob, stride_oh, stride_os,
               stride_lb, stride_lh,
               S, HQ, HKV, H_AX, N_AX, GROUP,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               EVEN_S: tl.constexpr, DOT_PREC: tl.constexpr, STAGES: tl.constexpr, PART_STAGES: tl.constexpr,
               TMA: tl.constexpr):
    pid = tl.program_id(0)
    prog = PROG + (pid // N_AX) * 8
    hax = pid % N_AX  # batch x the heads that share the program's rows
    b32 = hax // H_AX  # descriptor coordinates are int32; pointer offsets int64
    b = b32.to(tl.int64)
    hq = tl.load(prog + 0) + hax % H_AX
    hk = hq // GROUP
    qb = tl.load(prog + 1)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _tile(Q, stride_qh, stride_qs, b32 * HQ + hq, qb * BLOCK_M, S, BLOCK_M, HEAD_DIM, TMA, EVEN_S)
    kv_row = b32 * HKV + hk
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    for r in range(tl.load(prog + 2), tl.load(prog + 3)):
        for kb in tl.range(tl.load(RUNS + r * 4 + 1), tl.load(RUNS + r * 4 + 2), num_stages=STAGES):
            acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row, kb,
                                       offs_m, S, qk_scale, 0, 0, 0, 0, 0, 0, BLOCK_N, HEAD_DIM, False, EVEN_S,
                                       DOT_PREC, TMA)
    for e in tl.range(tl.load(prog + 4), tl.load(prog + 5), num_stages=PART_STAGES):
        ent = PARTS + e * 8
        q0, q1, k0, k1, lo, hi = _load_rule(ent)
        acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row,
                                   tl.load(ent + 1), offs_m, S, qk_scale, q0, q1, k0, k1, lo, hi, BLOCK_N, HEAD_DIM,
                                   True, EVEN_S, DOT_PREC, TMA)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    o_ptrs = O + b * stride_ob + hq.to(tl.int64) * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    lse_ptrs = LSE + b * stride_lb + hq.to(tl.int64) * stride_lh + offs_m
    if EVEN_S:
        tl.store(o_ptrs, out.to(O.dtype.element_ty))
        tl.store(lse_ptrs, lse)
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=offs_m[:, None] < S)
        tl.store(lse_ptrs, lse, mask=offs_m < S)


@triton.jit
def bwd_preprocess_kernel(O, DO, DELTA, DLSE,
                          stride_ob, stride_oh, stride_os,
                          stride_dob, stride_doh, stride_dos,
                          stride_lb, stride_lh,
                          S, HQ,
                          BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_DLSE: tl.constexpr):
    """delta = rowsum(O * dO) - dlse, float32 (an lse gradient folds in: d lse / d s_ij = P_ij)."""
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // HQ).to(tl.int64)
    hq = (bh % HQ).to(tl.int64)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S
    o = tl.load(O + b * stride_ob + hq * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :],
                mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + hq * stride_doh + offs_m[:, None] * stride_dos + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    lse_off = b * stride_lb + hq * stride_lh + offs_m
    if HAS_DLSE:
        delta -= tl.load(DLSE + lse_off, mask=row_ok, other=0.0)
    tl.store(DELTA + lse_off, delta, mask=row_ok)


@triton.jit
def _bwd_kv_block(dk, dv, k, v, offs_n, qb, Q, DO, stride_qh, stride_qs, stride_doh, stride_dos, q_row,
                  lse_base, delta_base, dq_base, stride_dqs, S, qk_scale, sm_scale,
                  q0, q1, k0, k1, lo, hi,
                  BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
                  ATOMIC_DQ: tl.constexpr, DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _tile(Q, stride_qh, stride_qs, q_row, qb * BLOCK_M, S, BLOCK_M, HEAD_DIM, TMA, EVEN_S)
    do = _tile(DO, stride_doh, stride_dos, q_row, qb * BLOCK_M, S, BLOCK_M, HEAD_DIM, TMA, EVEN_S)
    if EVEN_S:
        lse = tl.load(lse_base + offs_m)
        delta = tl.load(delta_base + offs_m)
    else:
        row_ok = offs_m < S
        lse = tl.load(lse_base + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634  # empty rows: P = 0
    sT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale  # [BLOCK_N, BLOCK_M]
    pT = tl.math.exp2(sT - lse[None, :])
    if MASKED:
        pT = tl.where(_rule(offs_m[None, :], offs_n[:, None], q0, q1, k0, k1, lo, hi), pT, 0.0)
    elif not EVEN_S:
        pT = tl.where(offs_n[:, None] < S, pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)
    dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
    dsT = (pT * (dpT - delta[None, :])).to(q.dtype)
    dk += tl.dot(dsT, q, input_precision=DOT_PREC)
    if ATOMIC_DQ:
        # dq^T = k^T ds^T: M is the head dim (>= 64), so the MMA is wgmma even for a short query tile
        dq = tl.trans(tl.dot(tl.trans(k), dsT, input_precision=DOT_PREC) * sm_scale)  # [BLOCK_M, HEAD_DIM]
        dq_ptrs = dq_base + offs_m[:, None] * stride_dqs + offs_d[None, :]
        if EVEN_S:
            tl.atomic_add(dq_ptrs, dq, sem="relaxed")
        else:
            tl.atomic_add(dq_ptrs, dq, mask=offs_m[:, None] < S, sem="relaxed")
    return dk, dv


@triton.jit
def bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, DKV_PART, PROG, RUNS, PARTS,
                    qk_scale, sm_scale,
                    stride_qh, stride_qs, stride_kh, stride_ks, stride_vh, stride_vs, stride_doh, stride_dos,
                    stride_dkb, stride_dkh, stride_dks,
                    stride_dqb, stride_dqh, stride_dqs,
                    stride_lb, stride_lh,
                    S, HQ, HKV, H_AX, N_AX, GROUP,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                    EVEN_S: tl.constexpr, ATOMIC_DQ: tl.constexpr, DOT_PREC: tl.constexpr,
                    STAGES: tl.constexpr, PART_STAGES: tl.constexpr, TMA: tl.constexpr):
    """One program per (key block [segment], batch x kv head): dk, dv of the block, summed over
    the GQA group's query heads inside the program (no atomics for dk/dv). A program whose
    slot is >= 0 holds one segment of a split row: it writes float32 partial sums, which
    :func:`bwd_dkdv_reduce_kernel` adds. With ATOMIC_DQ, dq is accumulated into a float32
    buffer with relaxed atomic adds (fast, not deterministic)."""
    pid = tl.program_id(0)
    prog = PROG + (pid // N_AX) * 8
    hax = pid % N_AX
    b32 = hax // H_AX
    b = b32.to(tl.int64)
    hk = tl.load(prog + 0) + hax % H_AX
    kb = tl.load(prog + 1)
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = _tile(K, stride_kh, stride_ks, b32 * HKV + hk, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    v = _tile(V, stride_vh, stride_vs, b32 * HKV + hk, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for r in range(tl.load(prog + 2), tl.load(prog + 3)):
        hq32 = hk * GROUP + tl.load(RUNS + r * 4)
        q_row = b32 * HQ + hq32
        hq = hq32.to(tl.int64)
        dq_base = DQ_ACC + b * stride_dqb + hq * stride_dqh
        lse_base = LSE + b * stride_lb + hq * stride_lh
        delta_base = DELTA + b * stride_lb + hq * stride_lh
        for qb in tl.range(tl.load(RUNS + r * 4 + 1), tl.load(RUNS + r * 4 + 2), num_stages=STAGES):
            dk, dv = _bwd_kv_block(dk, dv, k, v, offs_n, qb, Q, DO, stride_qh, stride_qs, stride_doh, stride_dos,
                                   q_row, lse_base, delta_base, dq_base, stride_dqs, S, qk_scale, sm_scale,
                                   0, 0, 0, 0, 0, 0, BLOCK_M, HEAD_DIM, False, EVEN_S, ATOMIC_DQ, DOT_PREC, TMA)
    for e in tl.range(tl.load(prog + 4), tl.load(prog + 5), num_stages=PART_STAGES):
        ent = PARTS + e * 8
        hq32 = hk * GROUP + tl.load(ent)
        hq = hq32.to(tl.int64)
        q0, q1, k0, k1, lo, hi = _load_rule(ent)
        dk, dv = _bwd_kv_block(dk, dv, k, v, offs_n, tl.load(ent + 1), Q, DO, stride_qh, stride_qs, stride_doh,
                               stride_dos, b32 * HQ + hq32, LSE + b * stride_lb + hq * stride_lh,
                               DELTA + b * stride_lb + hq * stride_lh, DQ_ACC + b * stride_dqb + hq * stride_dqh,
                               stride_dqs, S, qk_scale, sm_scale, q0, q1, k0, k1, lo, hi,
                               BLOCK_M, HEAD_DIM, True, EVEN_S, ATOMIC_DQ, DOT_PREC, TMA)
    slot = tl.load(prog + 6)
    if slot < 0:
        off = b * stride_dkb + hk.to(tl.int64) * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :]
        if EVEN_S:
            tl.store(DK + off, (dk * sm_scale).to(DK.dtype.element_ty))
            tl.store(DV + off, dv.to(DV.dtype.element_ty))
        else:
            tl.store(DK + off, (dk * sm_scale).to(DK.dtype.element_ty), mask=offs_n[:, None] < S)
            tl.store(DV + off, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < S)
    else:
        part = DKV_PART + (slot * N_AX + hax).to(tl.int64) * (2 * BLOCK_N * HEAD_DIM)
        tile = tl.arange(0, BLOCK_N)[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(part + tile, dk)
        tl.store(part + BLOCK_N * HEAD_DIM + tile, dv)


@triton.jit
def bwd_dkdv_reduce_kernel(DK, DV, DKV_PART, SPLITS, sm_scale,
                           stride_dkb, stride_dkh, stride_dks,
                           S, H_AX, N_AX,
                           BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """dk, dv of the split rows: the float32 partial sums of their segments, added in slot order."""
    pid = tl.program_id(0)
    split = SPLITS + (pid // N_AX) * 4
    hax = pid % N_AX
    b = (hax // H_AX).to(tl.int64)
    hk = tl.load(split + 0) + hax % H_AX
    offs_n = tl.load(split + 1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    tile = tl.arange(0, BLOCK_N)[:, None] * HEAD_DIM + offs_d[None, :]
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for slot in range(tl.load(split + 2), tl.load(split + 3)):
        part = DKV_PART + (slot * N_AX + hax).to(tl.int64) * (2 * BLOCK_N * HEAD_DIM)
        dk += tl.load(part + tile)
        dv += tl.load(part + BLOCK_N * HEAD_DIM + tile)
    off = b * stride_dkb + hk.to(tl.int64) * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :]
    tl.store(DK + off, (dk * sm_scale).to(DK.dtype.element_ty), mask=offs_n[:, None] < S)
    tl.store(DV + off, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < S)


@triton.jit
def _bwd_q_block(dq, q, do, lse, delta, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row, kb, offs_m, S,
                 qk_scale, q0, q1, k0, k1, lo, hi,
                 BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
                 DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _tile(K, stride_kh, stride_ks, kv_row, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    v = _tile(V, stride_vh, stride_vs, kv_row, kb * BLOCK_N, S, BLOCK_N, HEAD_DIM, TMA, EVEN_S)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.math.exp2(s - lse[:, None])
    if MASKED:
        p = tl.where(_rule(offs_m[:, None], offs_n[None, :], q0, q1, k0, k1, lo, hi), p, 0.0)
    elif not EVEN_S:
        p = tl.where(offs_n[None, :] < S, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@triton.jit
def bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, PROG, RUNS, PARTS,
                  qk_scale, sm_scale,
                  stride_qh, stride_qs, stride_kh, stride_ks, stride_vh, stride_vs, stride_doh, stride_dos,
                  stride_dqb, stride_dqh, stride_dqs,
                  stride_lb, stride_lh,
                  S, HQ, HKV, H_AX, N_AX, GROUP,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                  EVEN_S: tl.constexpr, DOT_PREC: tl.constexpr, STAGES: tl.constexpr, PART_STAGES: tl.constexpr,
                  TMA: tl.constexpr):
    """Deterministic dq: one program per (query block, batch x query head), over its key blocks,
    with a tile of its own (long query tiles: every dot has M = BLOCK_M)."""
    pid = tl.program_id(0)
    prog = PROG + (pid // N_AX) * 8
    hax = pid % N_AX
    b32 = hax // H_AX
    b = b32.to(tl.int64)
    hq = tl.load(prog + 0) + hax % H_AX
    hk = hq // GROUP
    qb = tl.load(prog + 1)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S
    q = _tile(Q, stride_qh, stride_qs, b32 * HQ + hq, qb * BLOCK_M, S, BLOCK_M, HEAD_DIM, TMA, EVEN_S)
    do = _tile(DO, stride_doh, stride_dos, b32 * HQ + hq, qb * BLOCK_M, S, BLOCK_M, HEAD_DIM, TMA, EVEN_S)
    lse_off = b * stride_lb + hq.to(tl.int64) * stride_lh + offs_m
    lse = tl.load(LSE + lse_off, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
    delta = tl.load(DELTA + lse_off, mask=row_ok, other=0.0)
    kv_row = b32 * HKV + hk
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for r in range(tl.load(prog + 2), tl.load(prog + 3)):
        for kb in tl.range(tl.load(RUNS + r * 4 + 1), tl.load(RUNS + r * 4 + 2), num_stages=STAGES):
            dq = _bwd_q_block(dq, q, do, lse, delta, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row, kb,
                              offs_m, S, qk_scale, 0, 0, 0, 0, 0, 0, BLOCK_N, HEAD_DIM, False, EVEN_S, DOT_PREC, TMA)
    for e in tl.range(tl.load(prog + 4), tl.load(prog + 5), num_stages=PART_STAGES):
        ent = PARTS + e * 8
        q0, q1, k0, k1, lo, hi = _load_rule(ent)
        dq = _bwd_q_block(dq, q, do, lse, delta, K, V, stride_kh, stride_ks, stride_vh, stride_vs, kv_row,
                          tl.load(ent + 1), offs_m, S, qk_scale, q0, q1, k0, k1, lo, hi, BLOCK_N, HEAD_DIM, True,
                          EVEN_S, DOT_PREC, TMA)
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + hq.to(tl.int64) * stride_dqh + offs_m[:, None] * stride_dqs + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
