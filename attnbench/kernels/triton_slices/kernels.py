"""The Triton kernels of ``triton_slices`` (FlashAttention-2 style, slice-driven).

Importing this module compiles nothing; it defines the jitted functions. Whether they run
compiled or in Triton's interpreter is decided by ``TRITON_INTERPRET`` at import time
(recorded in :data:`INTERPRETED`).

Layout: q, o, do ``[B, Hq, S, D]``; k, v ``[B, Hkv, S, D]`` (last dim contiguous); lse and
delta ``[B, Hq, S]`` float32 (lse in natural log). Scores are kept in the log2 domain
(``qk * scale * log2(e)``) and exponentiated with ``exp2``.

Schedules (see ``schedule.py``): per query block (forward, dq) or per key block (dk/dv),
a list of FULL blocks, visited without any element mask, and a list of PARTIAL blocks, each
with a range of rules ``(q0, q1, k0, k1, lo, hi)`` ORed element-wise.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton import knobs

INTERPRETED: bool = bool(knobs.runtime.interpret)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _allowed(RULES, RULE_IDX, r0, r1, qi, kj):
    """OR over rules ``RULE_IDX[r0:r1]`` of ``q0 <= qi < q1 & k0 <= kj < k1 & lo <= kj - qi <= hi``.

    ``qi`` and ``kj`` are broadcastable 2-D index tensors (``[M, 1]``/``[1, N]`` or transposed)."""
    d = kj - qi
    ok = (qi < 0) & (kj < 0)  # all False, the tile's shape
    for r in range(r0, r1):
        rule = RULES + tl.load(RULE_IDX + r) * 6
        q0 = tl.load(rule + 0)
        q1 = tl.load(rule + 1)
        k0 = tl.load(rule + 2)
        k1 = tl.load(rule + 3)
        lo = tl.load(rule + 4)
        hi = tl.load(rule + 5)
        ok = ok | ((qi >= q0) & (qi < q1) & (kj >= k0) & (kj < k1) & (d >= lo) & (d <= hi))
    return ok


@triton.jit
def _fwd_block(acc, m_i, l_i, q, k_base, v_base, stride_ks, stride_vs, kb, offs_m, RULES, RULE_IDX, r0, r1,
               S, qk_scale,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
               DOT_PREC: tl.constexpr):
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    if EVEN_S:
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :])
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :])
    else:
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    if MASKED:
        s = tl.where(_allowed(RULES, RULE_IDX, r0, r1, offs_m[:, None], offs_n[None, :]), s, float("-inf"))
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
def fwd_kernel(Q, K, V, O, LSE, RULES, RULE_IDX,
               FULL_PTR, FULL_IDX, PART_PTR, PART_IDX, PART_R0, PART_R1,
               qk_scale,
               stride_qb, stride_qh, stride_qs,
               stride_kb, stride_kh, stride_ks,
               stride_vb, stride_vh, stride_vs,
               stride_ob, stride_oh, stride_os,
               S, HQ, GROUP, NQB, MASK_PER_HEAD,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               EVEN_S: tl.constexpr, DOT_PREC: tl.constexpr):
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    hq = bh % HQ
    hk = hq // GROUP
    row = (hq * MASK_PER_HEAD) * NQB + qb
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + b * stride_qb + hq * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < S, other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    f0 = tl.load(FULL_PTR + row)
    f1 = tl.load(FULL_PTR + row + 1)
    for e in range(f0, f1):
        kb = tl.load(FULL_IDX + e)
        acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, k_base, v_base, stride_ks, stride_vs, kb, offs_m,
                                   RULES, RULE_IDX, 0, 0, S, qk_scale,
                                   BLOCK_N, HEAD_DIM, False, EVEN_S, DOT_PREC)
    p0 = tl.load(PART_PTR + row)
    p1 = tl.load(PART_PTR + row + 1)
    for e in range(p0, p1):
        kb = tl.load(PART_IDX + e)
        r0 = tl.load(PART_R0 + e)
        r1 = tl.load(PART_R1 + e)
        acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, k_base, v_base, stride_ks, stride_vs, kb, offs_m,
                                   RULES, RULE_IDX, r0, r1, S, qk_scale,
                                   BLOCK_N, HEAD_DIM, True, EVEN_S, DOT_PREC)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    o_ptrs = O + b * stride_ob + hq * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=offs_m[:, None] < S)
    tl.store(LSE + bh * S + offs_m, lse, mask=offs_m < S)


@triton.jit
def bwd_preprocess_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_os, S, HQ,
                          BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """delta = rowsum(O * dO) in float32 (O and dO share strides)."""
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    hq = bh % HQ
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    off = b * stride_ob + hq * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    o = tl.load(O + off, mask=offs_m[:, None] < S, other=0.0).to(tl.float32)
    do = tl.load(DO + off, mask=offs_m[:, None] < S, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * S + offs_m, tl.sum(o * do, 1), mask=offs_m < S)


@triton.jit
def _bwd_kv_block(dk, dv, k, v, offs_n, qb, q_base, do_base, lse_base, delta_base, dq_base, stride_qs, stride_dos,
                  stride_dqs, RULES, RULE_IDX, r0, r1, S, qk_scale, sm_scale,
                  BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
                  ATOMIC_DQ: tl.constexpr, DOT_PREC: tl.constexpr):
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S
    q = tl.load(q_base + offs_m[:, None] * stride_qs + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_dos + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(lse_base + offs_m, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634  # empty rows: P = 0
    delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
    sT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale  # [BLOCK_N, BLOCK_M]
    pT = tl.math.exp2(sT - lse[None, :])
    if MASKED:
        pT = tl.where(_allowed(RULES, RULE_IDX, r0, r1, offs_m[None, :], offs_n[:, None]), pT, 0.0)
    elif not EVEN_S:
        pT = tl.where(offs_n[:, None] < S, pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)
    dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)
    if ATOMIC_DQ:
        dq = tl.dot(tl.trans(dsT.to(k.dtype)), k, input_precision=DOT_PREC) * sm_scale
        tl.atomic_add(dq_base + offs_m[:, None] * stride_dqs + offs_d[None, :], dq, mask=row_ok[:, None])
    return dk, dv


@triton.jit
def bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, RULES, RULE_IDX,
                    FULL_PTR, FULL_IDX, PART_PTR, PART_IDX, PART_R0, PART_R1,
                    qk_scale, sm_scale,
                    stride_qb, stride_qh, stride_qs,
                    stride_kb, stride_kh, stride_ks,
                    stride_vb, stride_vh, stride_vs,
                    stride_dob, stride_doh, stride_dos,
                    stride_dkb, stride_dkh, stride_dks,
                    stride_dqb, stride_dqh, stride_dqs,
                    S, HQ, HKV, GROUP, NKB, MASK_PER_HEAD,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                    EVEN_S: tl.constexpr, ATOMIC_DQ: tl.constexpr, DOT_PREC: tl.constexpr):
    """One program per (key block, batch x kv head): dk, dv of the block, summed over the GQA
    group's query heads inside the program (no atomics for dk/dv). With ATOMIC_DQ, dq is
    accumulated into a float32 buffer with atomic adds (fast, not deterministic)."""
    kb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HKV
    hk = bh % HKV
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < S
    k = tl.load(K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for g in range(0, GROUP):
        hq = hk * GROUP + g
        col = (hq * MASK_PER_HEAD) * NKB + kb
        q_base = Q + b * stride_qb + hq * stride_qh
        do_base = DO + b * stride_dob + hq * stride_doh
        dq_base = DQ_ACC + b * stride_dqb + hq * stride_dqh
        lse_base = LSE + (b * HQ + hq) * S
        delta_base = DELTA + (b * HQ + hq) * S
        f0 = tl.load(FULL_PTR + col)
        f1 = tl.load(FULL_PTR + col + 1)
        for e in range(f0, f1):
            qb = tl.load(FULL_IDX + e)
            dk, dv = _bwd_kv_block(dk, dv, k, v, offs_n, qb, q_base, do_base, lse_base, delta_base, dq_base,
                                   stride_qs, stride_dos, stride_dqs, RULES, RULE_IDX, 0, 0, S, qk_scale, sm_scale,
                                   BLOCK_M, HEAD_DIM, False, EVEN_S, ATOMIC_DQ, DOT_PREC)
        p0 = tl.load(PART_PTR + col)
        p1 = tl.load(PART_PTR + col + 1)
        for e in range(p0, p1):
            qb = tl.load(PART_IDX + e)
            r0 = tl.load(PART_R0 + e)
            r1 = tl.load(PART_R1 + e)
            dk, dv = _bwd_kv_block(dk, dv, k, v, offs_n, qb, q_base, do_base, lse_base, delta_base, dq_base,
                                   stride_qs, stride_dos, stride_dqs, RULES, RULE_IDX, r0, r1, S, qk_scale,
                                   sm_scale, BLOCK_M, HEAD_DIM, True, EVEN_S, ATOMIC_DQ, DOT_PREC)
    dk = dk * sm_scale
    off = b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :]
    tl.store(DK + off, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + off, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _bwd_q_block(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, kb, offs_m, RULES, RULE_IDX, r0, r1,
                 S, qk_scale,
                 BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, EVEN_S: tl.constexpr,
                 DOT_PREC: tl.constexpr):
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.math.exp2(s - lse[:, None])
    if MASKED:
        p = tl.where(_allowed(RULES, RULE_IDX, r0, r1, offs_m[:, None], offs_n[None, :]), p, 0.0)
    elif not EVEN_S:
        p = tl.where(offs_n[None, :] < S, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@triton.jit
def bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, RULES, RULE_IDX,
                  FULL_PTR, FULL_IDX, PART_PTR, PART_IDX, PART_R0, PART_R1,
                  qk_scale, sm_scale,
                  stride_qb, stride_qh, stride_qs,
                  stride_kb, stride_kh, stride_ks,
                  stride_vb, stride_vh, stride_vs,
                  stride_dob, stride_doh, stride_dos,
                  stride_dqb, stride_dqh, stride_dqs,
                  S, HQ, GROUP, NQB, MASK_PER_HEAD,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                  EVEN_S: tl.constexpr, DOT_PREC: tl.constexpr):
    """Deterministic dq: one program per (query block, batch x query head), over its key blocks."""
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    hq = bh % HQ
    hk = hq // GROUP
    row = (hq * MASK_PER_HEAD) * NQB + qb
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S
    q = tl.load(Q + b * stride_qb + hq * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + hq * stride_doh + offs_m[:, None] * stride_dos + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * S + offs_m, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
    delta = tl.load(DELTA + bh * S + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    f0 = tl.load(FULL_PTR + row)
    f1 = tl.load(FULL_PTR + row + 1)
    for e in range(f0, f1):
        kb = tl.load(FULL_IDX + e)
        dq = _bwd_q_block(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, kb, offs_m, RULES, RULE_IDX,
                          0, 0, S, qk_scale, BLOCK_N, HEAD_DIM, False, EVEN_S, DOT_PREC)
    p0 = tl.load(PART_PTR + row)
    p1 = tl.load(PART_PTR + row + 1)
    for e in range(p0, p1):
        kb = tl.load(PART_IDX + e)
        r0 = tl.load(PART_R0 + e)
        r1 = tl.load(PART_R1 + e)
        dq = _bwd_q_block(dq, q, do, lse, delta, k_base, v_base, stride_ks, stride_vs, kb, offs_m, RULES, RULE_IDX,
                          r0, r1, S, qk_scale, BLOCK_N, HEAD_DIM, True, EVEN_S, DOT_PREC)
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + hq * stride_dqh + offs_m[:, None] * stride_dqs + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
