"""A plugin Triton kernel (loaded through ATTNBENCH_PLUGINS by the tests): dense attention on
the ``full`` mask, forward only, one program per 64-query block, that declares its launch
for ``attnbench inspect`` through the TritonKernel interface (and nothing else of attnbench's).

Its second launch adds every output row into a float32 sum with an ``acq_rel`` atomic: a
pattern inspect must report with its semantics (and flag: a sum needs only relaxed)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Kernel, Support
from attnbench.kernels.triton_launch import LaunchQuery, TritonKernel, TritonLaunch

BLOCK = 64


@triton.jit
def dense_fwd(Q, K, V, O, S, stride_h, scale, BLOCK: tl.constexpr, D: tl.constexpr):
    qb = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    rows = qb * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D)
    q = tl.load(Q + h * stride_h + rows[:, None] * D + cols[None, :])
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, D], tl.float32)
    for kb in range(0, S // BLOCK):
        keys = kb * BLOCK + tl.arange(0, BLOCK)
        k = tl.load(K + h * stride_h + keys[:, None] * D + cols[None, :])
        v = tl.load(V + h * stride_h + keys[:, None] * D + cols[None, :])
        s = tl.dot(q, tl.trans(k)) * scale
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    tl.store(O + h * stride_h + rows[:, None] * D + cols[None, :], (acc / l[:, None]).to(O.dtype.element_ty))


@triton.jit
def row_sums(O, SUMS, D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, D)
    tl.atomic_add(SUMS + cols, tl.load(O + row * D + cols).to(tl.float32), sem="acq_rel")


@register_kernel("triton_dense_plugin")
class TritonDensePlugin(TritonKernel, Kernel):
    name = "triton_dense_plugin"
    description = "dense Triton attention on the full mask (test plugin for attnbench inspect)"
    support = {"cuda": Support(masks=frozenset({"full"}), passes=frozenset(), gqa=False)}

    def triton_launches(self, query: LaunchQuery) -> list[TritonLaunch]:
        dtype = getattr(torch, query.dtype)
        H, S, D = query.batch * query.heads_q, query.seqlen, query.head_dim
        q, k, v, o = (torch.zeros(H, S, D, dtype=dtype, device=query.device) for _ in range(4))
        sums = torch.zeros(D, dtype=torch.float32, device=query.device)
        config = {"block_m": BLOCK, "block_n": BLOCK}
        return [
            TritonLaunch("forward", dense_fwd, (S // BLOCK, H), (q, k, v, o, S, S * D, D ** -0.5),
                         {"BLOCK": BLOCK, "D": D}, num_warps=4, num_stages=3, config=config),
            TritonLaunch("row_sums", row_sums, (H * S,), (o, sums), {"D": D}, num_warps=4, num_stages=1),
        ]

    def prepare(self, inputs, mask):
        if mask.name != "full" or inputs.seqlen % BLOCK:
            raise Unsupported("full mask and S % 64 == 0 only")
        out = torch.empty_like(inputs.q)
        B, H, S, D = inputs.q.shape
        q, k, v = (t.reshape(B * H, S, D).contiguous() for t in (inputs.q, inputs.k, inputs.v))

        def run() -> AttnOutput:
            dense_fwd[(S // BLOCK, B * H)](q, k, v, out, S, S * D, inputs.scale, BLOCK=BLOCK, D=D)
            return AttnOutput(out)

        return run
