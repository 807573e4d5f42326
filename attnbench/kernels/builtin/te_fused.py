"""`te_fused`: TransformerEngine's DotProductAttention with the cuDNN fused-attention back end
(``NVTE_FUSED_ATTN=1``, ``NVTE_FLASH_ATTN=0``), ``qkv_format="thd"``: tokens packed, documents
by ``cu_seqlens_q/kv``, mask type ``padding`` / ``padding_causal``, sliding windows by
``window_size=(left, right)``."""

from __future__ import annotations

import os

from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Support
from attnbench.kernels.builtin._external import (
    ExternalKernel,
    HALF, VARLEN_MASKS, batched_cu_seqlens, from_thd, import_library, to_thd, varlen_form,
)

#: TE picks its back end from these at every call; set in prepare (fused = cuDNN).
BACKEND_ENV = {"NVTE_FLASH_ATTN": "0", "NVTE_FUSED_ATTN": "1", "NVTE_UNFUSED_ATTN": "0"}


def te_arguments(mask, batch: int, seqlen: int, heads_q: int, heads_kv: int, head_dim: int, scale: float, device):
    """(constructor kwargs, forward kwargs) of DotProductAttention for `mask`."""
    form = varlen_form(mask)
    window = (int(form.window_left), int(form.window_right))
    init = {
        "num_attention_heads": heads_q, "kv_channels": head_dim, "num_gqa_groups": heads_kv,
        "attention_dropout": 0.0, "qkv_format": "thd",
        "attn_mask_type": "padding_causal" if form.causal else "padding",
        "window_size": window, "softmax_scale": scale,
    }
    cu = batched_cu_seqlens(form.cu_seqlens, batch, seqlen, device)
    call = {"cu_seqlens_q": cu, "cu_seqlens_kv": cu, "max_seqlen_q": form.max_seqlen, "max_seqlen_kv": form.max_seqlen}
    return init, call


@register_kernel("te_fused")
class TransformerEngineFused(ExternalKernel):
    name = "te_fused"
    aliases = ('te', 'transformer_engine', 'transformerengine', 'cudnn')
    description = "TransformerEngine DotProductAttention, cuDNN fused attention, thd layout with cu_seqlens"
    support = {"cuda": Support(masks=VARLEN_MASKS, dtypes=HALF, max_head_dim=128,
                               note="masks with a cu_seqlens/window form only")}
    work = "sparse"
    library_module = "transformer_engine"
    library_label = "transformer_engine"
    min_sm = (8, 0)
    arch_name = "Ampere or newer"

    def prepare(self, inputs, mask):
        os.environ.update(BACKEND_ENV)
        te = import_library("transformer_engine.pytorch", "transformer_engine")
        q, k, v = inputs.q, inputs.k, inputs.v
        B, Hq, S, D = q.shape
        init, call = te_arguments(mask, B, S, Hq, inputs.heads_kv, D, inputs.scale, q.device)
        module = te.DotProductAttention(**init)

        def run() -> AttnOutput:
            out = module(to_thd(q), to_thd(k), to_thd(v), **call)  # [T, Hq * D]
            return AttnOutput(from_thd(out.reshape(B * S, Hq, D), B, S))

        return run
