"""`flex`: compiled FlexAttention driven by the mask's BlockMask (built from slices)."""

from __future__ import annotations

import functools


from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Kernel, MemoryModel, Support, device_type
from attnbench.cases import Pass

BLOCK_SIZE = 128


@functools.lru_cache(maxsize=None)
def compiled_flex_attention():
    """One compiled FlexAttention per process; every mask and shape is a recompile of it."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    # Each mask family and shape adds a graph; the default limit (8) would silently fall
    # back to the eager path, which materialises scores.
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 1024)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4096)
    return torch.compile(flex_attention, dynamic=False)


@register_kernel("flex")
class FlexKernel(Kernel):
    name = "flex"
    aliases = ('flex_attention', 'flexattention')
    description = "torch.nn.attention.flex_attention, compiled, BlockMask from the mask's slices"
    support = {
        "cpu": Support(passes=frozenset({Pass.forward}), note="FlexAttention has no backward on CPU"),
        "cuda": Support(),
    }
    work = "sparse"
    memory = MemoryModel(per_token_head=4.0, per_mask_element=8.0 / BLOCK_SIZE**2)  # q-block x kv-block indices
    # CPU, one thread, 2 loaded cores: a new graph took 5-15 s in the longctx cpu profile (a
    # graph is reused by some masks: 0.4-1.9 s); the first one in a process 14-31 s. CUDA: not
    # measured yet
    compile_seconds = {"cpu": 5.0}
    compiler_start_seconds = {"cpu": 10.0}

    def prepare(self, inputs, mask):
        from attnbench.masks.convert import to_block_mask

        device = inputs.q.device
        block_mask = to_block_mask(mask, block_size=BLOCK_SIZE, device=str(device))
        flex = compiled_flex_attention()
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
        gqa = inputs.heads_q != inputs.heads_kv
        # compiled FlexAttention on CPU is inference-only and cannot return the lse
        with_lse = device_type(str(device)) == "cuda"

        def run() -> AttnOutput:
            if with_lse:
                return flex_with_lse(flex, q, k, v, block_mask, scale, gqa)
            return AttnOutput(flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa))

        return run

    slice_devices = frozenset({"cuda"})  # compiled FlexAttention on CPU returns no lse, has no backward

    def attend_slices(self, q, k, v, local, scale):
        block_mask = local.block_mask(q.device, BLOCK_SIZE)
        return flex_with_lse(compiled_flex_attention(), q, k, v, block_mask, scale, q.shape[1] != k.shape[1])


def flex_with_lse(flex, q, k, v, block_mask, scale, gqa) -> AttnOutput:
    """Output and (natural-log) lse from FlexAttention, through the API this torch has."""
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # older torch: the deprecated flag
        out, lse = flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa, return_lse=True)
        return AttnOutput(out, lse)
    out, aux = flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa, return_aux=AuxRequest(lse=True))
    return AttnOutput(out, aux.lse)
