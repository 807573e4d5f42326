"""`flashinfer`: FlashInfer's block-sparse attention (forward only).

- ``block_sparse``: ``BlockSparseAttentionWrapper`` (BSR: ``indptr``/``indices`` of R x C
  blocks). Its mask is shared by all heads, ours differs per head, so the heads are laid end
  to end on the token axis (q ``[Hq*S, 1, D]``, K/V expanded to the query heads): row block
  ``h*nqb + qb`` lists key blocks ``h*nkb + kb``. Needs S to be a multiple of the block.
- ``variable_block_sparse``: ``VariableBlockSparseAttentionWrapper`` with the per-head
  ``block_mask_map [H, MB, NB]`` and the block sizes ``block_row_sz [H, MB]``,
  ``block_col_sz [H, NB]`` (K/V expanded to the query heads: one mask per query head).
- ``full`` / ``causal``: ``single_prefill_with_kv_cache`` (NHD, native GQA).
(File name avoids shadowing the `flashinfer` package.)
"""

from __future__ import annotations

import numpy as np
import torch

from attnbench.cases import Pass
from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Support, repeat_kv
from attnbench.kernels.builtin._external import ExternalKernel, HALF, import_library, split_out_lse

WORKSPACE_BYTES = 128 * 1024 * 1024


def block_sparse_bsr(mask) -> dict:
    """BSR arguments (heads end to end) of a ``block_sparse`` mask: indptr, indices (int32),
    M, N, R, C. Derived from the slices (each slice is a run of whole selected blocks)."""
    B = int(mask.params["block"])
    S, H = mask.seqlen, mask.heads
    if S % B:
        raise Unsupported(f"flashinfer block_sparse: seqlen {S} is not a multiple of the block {B}")
    n = S // B
    t = mask.slices
    head = np.zeros(len(t), dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    counts = (t.k1 - t.k0) // B
    owner = np.repeat(np.arange(len(t)), counts)
    kb = t.k0[owner] // B + (np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts))
    row = head[owner] * n + t.q0[owner] // B
    col = head[owner] * n + kb
    order = np.lexsort((col, row))
    row, col = row[order], col[order]
    indptr = np.zeros(H * n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=H * n), out=indptr[1:])
    return {"indptr": indptr.astype(np.int32), "indices": col.astype(np.int32), "M": H * S, "N": H * S, "R": B, "C": B}


def variable_block_arguments(mask) -> dict:
    """block_mask_map [H, MB, NB] bool, block_row_sz [H, MB], block_col_sz [H, NB] (int32) of a
    ``variable_block_sparse`` mask, from its block bounds and slices."""
    from attnbench.masks.families.variable_block_sparse import block_bounds

    S, H = mask.seqlen, mask.heads
    qb = block_bounds(S, int(mask.params["avg_block"]), int(mask.params["seed"]), 1)
    kb = block_bounds(S, int(mask.params["avg_block"]), int(mask.params["seed"]), 2)
    MB, NB = len(qb) - 1, len(kb) - 1
    t = mask.slices
    head = np.zeros(len(t), dtype=np.int64) if t.head is None else t.head.astype(np.int64)
    qi = np.searchsorted(qb, t.q0)
    k_first, k_stop = np.searchsorted(kb, t.k0), np.searchsorted(kb, t.k1)
    if not (np.array_equal(qb[qi], t.q0) and np.array_equal(kb[k_first], t.k0) and np.array_equal(kb[k_stop], t.k1)):
        raise Unsupported("flashinfer variable_block_sparse: slices do not lie on the block bounds")
    block_map = np.zeros((H, MB, NB), dtype=bool)
    counts = k_stop - k_first
    owner = np.repeat(np.arange(len(t)), counts)
    k = k_first[owner] + (np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts))
    block_map[head[owner], qi[owner], k] = True
    return {
        "block_mask_map": block_map,
        "block_row_sz": np.broadcast_to(np.diff(qb).astype(np.int32), (H, MB)).copy(),
        "block_col_sz": np.broadcast_to(np.diff(kb).astype(np.int32), (H, NB)).copy(),
    }


@register_kernel("flashinfer")
class FlashInfer(ExternalKernel):
    name = "flashinfer"
    aliases = ('flash_infer',)
    description = "FlashInfer BlockSparse / VariableBlockSparse wrappers (and single prefill for full, causal)"
    support = {"cuda": Support(masks=frozenset({"block_sparse", "variable_block_sparse", "full", "causal"}),
                               passes=frozenset({Pass.forward}), dtypes=HALF, head_dims=frozenset({64, 128, 256}),
                               note="FlashInfer's sparse wrappers are inference kernels (no backward)")}
    work = "sparse"
    library_module = "flashinfer"
    library_label = "flashinfer"
    min_sm = (8, 0)
    arch_name = "Ampere or newer"

    def prepare(self, inputs, mask):
        fi = import_library("flashinfer", "flashinfer")
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
        B, Hq, S, D = q.shape
        groups = Hq // inputs.heads_kv
        device = q.device

        if mask.name in ("full", "causal"):
            causal = mask.name == "causal"

            def dense() -> AttnOutput:
                outs, lses = [], []
                for b in range(B):
                    o, lse = split_out_lse(fi.single_prefill_with_kv_cache(
                        q[b].transpose(0, 1), k[b].transpose(0, 1), v[b].transpose(0, 1),
                        causal=causal, sm_scale=scale, return_lse=True))
                    outs.append(o.transpose(0, 1))
                    lses.append(None if lse is None else lse.transpose(0, 1))
                lse = torch.stack(lses) if all(x is not None for x in lses) else None
                return AttnOutput(torch.stack(outs), lse)

            return dense

        workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        if mask.name == "block_sparse":
            bsr = block_sparse_bsr(mask)
            wrapper = fi.BlockSparseAttentionWrapper(workspace)
            wrapper.plan(
                torch.from_numpy(bsr["indptr"]).to(device), torch.from_numpy(bsr["indices"]).to(device),
                bsr["M"], bsr["N"], bsr["R"], bsr["C"], 1, 1, D, sm_scale=scale, q_data_type=q.dtype,
            )

            def run() -> AttnOutput:
                outs = []
                for b in range(B):
                    kk, vv = repeat_kv(k[b:b + 1], groups)[0], repeat_kv(v[b:b + 1], groups)[0]
                    o = wrapper.run(q[b].reshape(Hq * S, 1, D), kk.reshape(Hq * S, 1, D), vv.reshape(Hq * S, 1, D))
                    outs.append(split_out_lse(o)[0].reshape(Hq, S, D))
                return AttnOutput(torch.stack(outs))

            return run

        if mask.name == "variable_block_sparse":
            a = variable_block_arguments(mask)
            wrapper = fi.sparse.VariableBlockSparseAttentionWrapper(workspace)
            wrapper.plan(
                block_mask_map=torch.from_numpy(a["block_mask_map"]).to(device),
                block_row_sz=torch.from_numpy(a["block_row_sz"]).to(device),
                block_col_sz=torch.from_numpy(a["block_col_sz"]).to(device),
                num_qo_heads=Hq, num_kv_heads=Hq, head_dim=D, sm_scale=scale, q_data_type=q.dtype,
            )

            def run_variable() -> AttnOutput:
                outs = []
                for b in range(B):
                    kk, vv = repeat_kv(k[b:b + 1], groups)[0], repeat_kv(v[b:b + 1], groups)[0]
                    outs.append(split_out_lse(wrapper.run(q[b], kk, vv))[0])  # HND: [Hq, S, D]
                return AttnOutput(torch.stack(outs))

            return run_variable
        raise Unsupported(f"flashinfer: mask {mask.name!r} not mapped")
