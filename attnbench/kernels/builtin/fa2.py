"""`fa2`: FlashAttention 2 (the `flash_attn` package): flash_attn_func for one sequence,
flash_attn_varlen_func (cu_seqlens) for the document masks, window_size for the sliding ones.

The six masks with a flash-attn form (``Mask.varlen``): full, causal, sliding_window,
sliding_window_causal, full_document, causal_document. GQA is native (Hq a multiple of Hkv).
"""

from __future__ import annotations

from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Support
from attnbench.kernels.builtin._external import (
    ExternalKernel,
    HALF, VARLEN_MASKS, accepts, batched_cu_seqlens, from_thd, import_library, split_out_lse,
    to_bshd, to_thd, varlen_form,
)


def flash_call_args(mask, batch: int, seqlen: int, device, scale: float) -> dict:
    """The keyword arguments of the flash-attn call for `mask` (documented convention):
    ``softmax_scale``, ``causal``, ``window_size=(left, right)`` (-1 = unbounded) and, for
    more than one document, ``cu_seqlens_q/k`` (int32, batches packed) and ``max_seqlen_q/k``."""
    form = varlen_form(mask)
    args = {"softmax_scale": scale, "causal": bool(form.causal),
            "window_size": (int(form.window_left), int(form.window_right))}
    if len(form.cu_seqlens) > 2:  # documents: varlen, the batch packed into one token axis
        cu = batched_cu_seqlens(form.cu_seqlens, batch, seqlen, device)
        args.update(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=form.max_seqlen, max_seqlen_k=form.max_seqlen)
    return args


def run_flash(module, inputs, mask, *, varlen_name="flash_attn_varlen_func", dense_name="flash_attn_func"):
    """A closure calling `module`'s dense or varlen entry point; returns (out, lse) in the harness layout."""
    q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
    B, H, S, D = q.shape
    args = flash_call_args(mask, B, S, q.device, scale)
    varlen = "cu_seqlens_q" in args
    fn = getattr(module, varlen_name if varlen else dense_name)
    if accepts(fn, "return_attn_probs"):
        args["return_attn_probs"] = True  # (out, lse, probs); probs are not computed without dropout

    if varlen:
        def run() -> AttnOutput:
            out, lse = split_out_lse(fn(to_thd(q), to_thd(k), to_thd(v), **args))
            if lse is not None and tuple(lse.shape) == (H, B * S):  # varlen lse: [H, total]
                lse = lse.reshape(H, B, S).transpose(0, 1)
            else:
                lse = None
            return AttnOutput(from_thd(out, B, S), lse)
    else:
        def run() -> AttnOutput:
            out, lse = split_out_lse(fn(to_bshd(q), to_bshd(k), to_bshd(v), **args))
            if lse is not None and tuple(lse.shape) != (B, H, S):
                lse = None
            return AttnOutput(out.transpose(1, 2), lse)
    return run


@register_kernel("fa2")
class FlashAttention2(ExternalKernel):
    name = "fa2"
    aliases = ('flash_attn', 'flash_attn2', 'flash_attention_2', 'flashattention2', 'fa', 'flash')
    description = "FlashAttention 2 (flash_attn): dense, varlen (cu_seqlens) for documents, window_size for sliding"
    support = {"cuda": Support(masks=VARLEN_MASKS, dtypes=HALF, max_head_dim=256,
                               note="masks with a cu_seqlens/window form only")}
    work = "sparse"
    library_module = "flash_attn"
    library_label = "flash_attn (FlashAttention 2)"
    min_sm = (8, 0)
    arch_name = "Ampere or newer"

    def prepare(self, inputs, mask):
        return run_flash(import_library("flash_attn", "flash_attn"), inputs, mask)
