"""`triton_slices`: attnbench's own FlashAttention-2-style Triton kernel, driven by the slices.

Each query block visits only the key blocks its slices touch; fully covered blocks run
without a mask, partial blocks apply the slices' rules element-wise (the kernel and its host
schedule live in :mod:`attnbench.kernels.triton_slices`). Returns out and lse; backward gives
dq, dk, dv. `triton_slices_det` is the same kernel with the deterministic backward (dq by its
own kernel instead of atomic adds).

On CPU it runs only in Triton's interpreter (``TRITON_INTERPRET=1`` set before the process
imports the kernels): correct but very slow, for tests. The interpreter mishandles bf16, so
the CPU matrix is fp32/fp16.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Availability, Kernel, MemoryModel, Support, device_type

HEAD_DIMS = frozenset({16, 32, 64, 128, 256})


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "yes", "on"}


def triton_availability(device: str) -> Availability:
    """Shared by both variants: triton importable, and the interpreter exactly on CPU."""
    if importlib.util.find_spec("triton") is None:
        return Availability(False, "triton not installed (pip install triton, or attnbench[triton])")
    kind = device_type(device)
    interpreting = interpreter_requested()
    loaded = sys.modules.get("attnbench.kernels.triton_slices.kernels")
    if loaded is not None:  # the kernels were already jitted one way or the other in this process
        interpreting = loaded.INTERPRETED
    if kind == "cpu" and not interpreting:
        return Availability(False, "Triton on CPU needs TRITON_INTERPRET=1 (the interpreter: correctness only)")
    if kind == "cuda" and interpreting:
        return Availability(False, "TRITON_INTERPRET=1 is set: unset it to run compiled Triton on the GPU")
    return Availability(True)


class _TritonSlicesBase(Kernel):
    description = "attnbench's Triton FlashAttention-2 (fwd+bwd, lse) over the mask's slices: full blocks unmasked"
    support = {
        "cpu": Support(dtypes=frozenset({"float32", "float16"}), head_dims=HEAD_DIMS,
                       note="CPU: Triton interpreter only (TRITON_INTERPRET=1), no bf16"),
        "cuda": Support(head_dims=HEAD_DIMS),
    }
    work = "sparse"
    # out, lse and (backward) the float32 dq accumulator
    memory = MemoryModel(per_token_head=6.0)
    deterministic = False

    def backend_availability(self, device: str) -> Availability:
        return triton_availability(device)

    def prepare(self, inputs, mask):
        available = triton_availability(str(inputs.q.device))
        if not available.ok:
            raise Unsupported(available.reason)
        from attnbench.kernels.triton_slices import kernels
        from attnbench.kernels.triton_slices.ops import default_config, make_plan, slice_attention

        config = default_config(inputs.q.shape[-1], deterministic=self.deterministic,
                                interpreted=kernels.INTERPRETED)
        try:
            plan = make_plan(mask, inputs.heads_q, inputs.q.device, config)
        except ValueError as exc:
            raise Unsupported(f"{self.name}: {exc}") from None
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale

        def run() -> AttnOutput:
            out, lse = slice_attention(q, k, v, plan, scale)
            return AttnOutput(out, lse)

        return run


@register_kernel("triton_slices")
class TritonSlices(_TritonSlicesBase):
    name = "triton_slices"


@register_kernel("triton_slices_det")
class TritonSlicesDeterministic(_TritonSlicesBase):
    name = "triton_slices_det"
    description = "triton_slices with the deterministic backward (dq by its own kernel, no atomics)"
    deterministic = True
