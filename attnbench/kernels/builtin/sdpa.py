"""`sdpa` (PyTorch's dispatcher) and each SDPA back end on its own.

Masks that are one full or causal block go through `is_causal`; every other mask is
materialised as a dense boolean `attn_mask` (O(S^2) memory: that is what SDPA offers).
A back end that refuses a case at run time is reported as unsupported with its reason.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import Availability, AttnOutput, Kernel, MemoryModel, Support, device_type, repeat_kv
from attnbench.kernels.builtin.naive import DENSE_MASK_LIMIT

HALF = frozenset({"float16", "bfloat16"})
FULL_OR_CAUSAL = frozenset({"full", "causal"})


def single_block_causality(mask) -> bool | None:
    """True/False when the mask is one causal/full square (no attn_mask needed), else None."""
    form = mask.varlen
    if form is None or len(form.cu_seqlens) != 2 or form.window_left >= 0:
        return None
    if form.causal:  # the varlen convention sets window_right = 0 for causal
        return True
    return False if form.window_right < 0 else None


class SdpaKernel(Kernel):
    backends: ClassVar[list[SDPBackend] | None] = None  # None: PyTorch chooses
    expand_gqa: ClassVar[bool] = False  # repeat K/V heads instead of enable_gqa
    work = "dense"
    memory = MemoryModel(per_mask_element=1.0)  # the boolean mask; fused back ends need O(S) beyond it

    def backend_availability(self, device: str) -> Availability:
        if self.backends is None:
            return Availability(True)
        return _probe(tuple(self.backends), device_type(device))

    def prepare(self, inputs, mask):
        from attnbench.masks.convert import dense

        causal = single_block_causality(mask)
        attn_mask = None
        if causal is None:
            attn_mask = dense(mask, max_elements=DENSE_MASK_LIMIT).to(inputs.q.device).unsqueeze(0)
        groups = inputs.heads_q // inputs.heads_kv
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
        backends = self.backends
        expand = self.expand_gqa and groups > 1

        def call() -> AttnOutput:
            kk, vv = (repeat_kv(k, groups), repeat_kv(v, groups)) if expand else (k, v)
            out = F.scaled_dot_product_attention(
                q, kk, vv, attn_mask=attn_mask, is_causal=bool(causal), scale=scale, enable_gqa=(groups > 1 and not expand)
            )
            return AttnOutput(out)

        if backends is None:
            return call

        def run() -> AttnOutput:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with sdpa_kernel(backends):
                        return call()
                except RuntimeError as exc:
                    if "No available kernel" in str(exc) or "No viable backend" in str(exc):
                        why = "; ".join(str(w.message).splitlines()[0] for w in caught) or str(exc).splitlines()[0]
                        raise Unsupported(f"{self.name} refused this case: {why}") from None
                    raise

        return run


_PROBES: dict[tuple, Availability] = {}


def _probe(backends: tuple, device: str) -> Availability:
    """Run a tiny attention on `device` with only `backends` enabled."""
    key = (backends, device)
    if key not in _PROBES:
        dtype = torch.float16 if device == "cuda" else torch.float32
        x = torch.zeros(1, 1, 16, 64, dtype=dtype, device=device)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with sdpa_kernel(list(backends)):
                    F.scaled_dot_product_attention(x, x, x)
            _PROBES[key] = Availability(True)
        except RuntimeError:
            names = ", ".join(b.name.lower() for b in backends)
            _PROBES[key] = Availability(False, f"SDPA back end {names} is not available on {device}")
    return _PROBES[key]


@register_kernel("sdpa")
class Sdpa(SdpaKernel):
    name = "sdpa"
    aliases = ('scaled_dot_product_attention', 'torch_sdpa')
    description = "torch.nn.functional.scaled_dot_product_attention, back end chosen by PyTorch"
    support = {"cpu": Support(), "cuda": Support()}


@register_kernel("sdpa_math")
class SdpaMath(SdpaKernel):
    name = "sdpa_math"
    aliases = ('math',)
    description = "SDPA math back end (composite PyTorch ops)"
    backends = [SDPBackend.MATH]
    support = {"cpu": Support(), "cuda": Support()}
    memory = MemoryModel(per_score=13.0, per_mask_element=1.0)  # materialises scores and probabilities


@register_kernel("sdpa_flash")
class SdpaFlash(SdpaKernel):
    name = "sdpa_flash"
    aliases = ('flash', 'flash_sdp', 'sdpa_flash_attention')
    description = "SDPA FlashAttention back end (FlashAttention-2 on CUDA, flash CPU kernel on CPU)"
    backends = [SDPBackend.FLASH_ATTENTION]
    support = {
        "cpu": Support(),
        "cuda": Support(masks=FULL_OR_CAUSAL, dtypes=HALF, max_head_dim=256, note="no arbitrary masks on CUDA"),
    }


@register_kernel("sdpa_efficient")
class SdpaEfficient(SdpaKernel):
    name = "sdpa_efficient"
    aliases = ('efficient', 'mem_efficient', 'memory_efficient', 'efficient_attention')
    description = "SDPA memory-efficient back end (xFormers-derived, CUDA)"
    backends = [SDPBackend.EFFICIENT_ATTENTION]
    expand_gqa = True
    support = {"cuda": Support()}


@register_kernel("sdpa_cudnn")
class SdpaCudnn(SdpaKernel):
    name = "sdpa_cudnn"
    aliases = ('cudnn', 'cudnn_attention', 'cudnn_sdp')
    description = "SDPA cuDNN back end (CUDA)"
    backends = [SDPBackend.CUDNN_ATTENTION]
    expand_gqa = True
    support = {"cuda": Support(masks=FULL_OR_CAUSAL, dtypes=HALF, max_head_dim=128)}
