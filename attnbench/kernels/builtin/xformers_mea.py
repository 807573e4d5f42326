"""`xformers`: xFormers' memory_efficient_attention with its structured attention biases:
LowerTriangularMask (causal), LocalAttentionFromBottomRightMask (sliding windows),
BlockDiagonalMask / BlockDiagonalCausalMask built from the document lengths (documents; the
batch is packed into one sequence of B x S tokens). GQA through the 5-D [B, S, G, H, D] form
with K/V expanded (no copy). (File name avoids shadowing the `xformers` package.)"""

from __future__ import annotations

import numpy as np

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Support
from attnbench.kernels.builtin._external import ExternalKernel, VARLEN_MASKS, import_library, varlen_form


def xformers_bias(fmha, mask, batch: int, seqlen: int):
    """(attn_bias, packed): the bias object for `mask`; packed=True when the batch must be
    flattened into one sequence (block-diagonal biases)."""
    form = varlen_form(mask)
    bias_mod = fmha.attn_bias
    docs = len(form.cu_seqlens) - 1
    wl, wr = int(form.window_left), int(form.window_right)
    if docs > 1:
        if wl >= 0 or (wr >= 0 and not form.causal):
            raise Unsupported("xformers: windows inside documents are not mapped")
        lengths = [int(x) for x in np.diff(form.cu_seqlens)] * batch
        cls = bias_mod.BlockDiagonalCausalMask if form.causal else bias_mod.BlockDiagonalMask
        return cls.from_seqlens(lengths), True
    if wl >= 0 or (wr >= 0 and not form.causal):
        right = 0 if form.causal else wr
        return bias_mod.LocalAttentionFromBottomRightMask(window_left=wl if wl >= 0 else seqlen, window_right=right), False
    if form.causal:
        return bias_mod.LowerTriangularMask(), False
    return None, False


@register_kernel("xformers")
class XFormers(ExternalKernel):
    name = "xformers"
    aliases = ('xformer', 'memory_efficient_attention', 'mea')
    description = "xFormers memory_efficient_attention with LowerTriangular / Local / BlockDiagonal(Causal) biases"
    support = {"cuda": Support(masks=VARLEN_MASKS, max_head_dim=256, note="masks with a cu_seqlens/window form only")}
    work = "sparse"
    library_module = "xformers"
    library_label = "xformers"


    def prepare(self, inputs, mask):
        ops = import_library("xformers.ops", "xformers")
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
        B, Hq, S, D = q.shape
        Hkv = inputs.heads_kv
        G = Hq // Hkv
        bias, packed = xformers_bias(ops.fmha, mask, B, S)

        def layout(x, expand: bool):
            x = x.transpose(1, 2)  # [B, S, H, D]
            if G > 1:  # 5-D: [B, S, Hkv, G, D]; K/V broadcast over G with stride 0
                x = x.unsqueeze(3).expand(B, S, Hkv, G, D) if expand else x.reshape(B, S, Hkv, G, D)
            if packed:
                x = x.reshape(1, B * S, *x.shape[2:])
            return x

        def run() -> AttnOutput:
            try:
                out = ops.memory_efficient_attention(layout(q, False), layout(k, True), layout(v, True),
                                                     attn_bias=bias, scale=scale)
            except NotImplementedError as exc:  # "No operator found for ..."
                raise Unsupported(f"xformers refused this case: {str(exc).splitlines()[0]}") from None
            return AttnOutput(out.reshape(B, S, Hq, D).transpose(1, 2))

        return run
