"""`fa3`: FlashAttention 3 (`flash_attn_interface`, the Hopper build of flash-attention):
flash_attn_func / flash_attn_varlen_func with the same cu_seqlens and window_size convention
as FlashAttention 2. Hopper (sm90) only."""

from __future__ import annotations

from attnbench.kernels import register_kernel
from attnbench.kernels.base import Support
from attnbench.kernels.builtin._external import ExternalKernel, HALF, VARLEN_MASKS, import_library
from attnbench.kernels.builtin.fa2 import run_flash


@register_kernel("fa3")
class FlashAttention3(ExternalKernel):
    name = "fa3"
    aliases = ('flash_attn3', 'flash_attention_3', 'flashattention3', 'flash_attn_interface', 'fa', 'flash')
    description = "FlashAttention 3 (flash_attn_interface, Hopper): dense, varlen for documents, window for sliding"
    support = {"cuda": Support(masks=VARLEN_MASKS, dtypes=HALF, max_head_dim=256,
                               note="masks with a cu_seqlens/window form only")}
    work = "sparse"
    library_module = "flash_attn_interface"
    library_label = "flash_attn_interface (FlashAttention 3)"
    exact_sm = (9, 0)
    arch_name = "Hopper"

    def prepare(self, inputs, mask):
        return run_flash(import_library("flash_attn_interface", "flash_attn_interface"), inputs, mask)
