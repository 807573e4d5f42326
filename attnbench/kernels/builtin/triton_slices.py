"""`triton_slices`: attnbench's own FlashAttention-2-style Triton kernel, driven by the slices.

Each query block visits only the key blocks its slices touch; fully covered blocks run
without a mask, partial blocks apply the slices' rules element-wise (the kernel and its host
schedule live in :mod:`attnbench.kernels.triton_slices`). Returns out and lse; backward gives
dq, dk, dv. `triton_slices_det` is the same kernel with the deterministic backward (dq by its
own kernel instead of atomic adds).

On a GPU the tiles come from the configuration table (:mod:`~attnbench.kernels.triton_slices.configs`)
for the device's architecture; the record's ``kernel_config`` says which and whether tuned.
On CPU it runs only in Triton's interpreter (``TRITON_INTERPRET=1`` set before the process
imports the kernels): correct but very slow, for tests. The interpreter mishandles bf16, so
the CPU matrix is fp32/fp16. Both variants declare their launches (``attnbench inspect``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from attnbench.errors import Unsupported, UserError
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Availability, Kernel, MemoryModel, Support, device_type
from attnbench.kernels.triton_launch import LaunchQuery, TritonKernel, TritonLaunch, arch_of_capability

HEAD_DIMS = frozenset({16, 32, 64, 128, 256})


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "yes", "on"}


def interpreting_now() -> bool:
    loaded = sys.modules.get("attnbench.kernels.triton_slices.kernels")
    if loaded is not None:  # the kernels were already jitted one way or the other in this process
        return loaded.INTERPRETED
    return interpreter_requested()


def triton_availability(device: str) -> Availability:
    """Shared by both variants: triton importable, and the interpreter exactly on CPU."""
    if importlib.util.find_spec("triton") is None:
        return Availability(False, "triton not installed (pip install triton, or attnbench[triton])")
    kind = device_type(device)
    interpreting = interpreting_now()
    if kind == "cpu" and not interpreting:
        return Availability(False, "Triton on CPU needs TRITON_INTERPRET=1 (the interpreter: correctness only)")
    if kind == "cuda" and interpreting:
        return Availability(False, "TRITON_INTERPRET=1 is set: unset it to run compiled Triton on the GPU")
    return Availability(True)


def device_arch(device: str) -> str:
    import torch

    return arch_of_capability(*torch.cuda.get_device_capability(device))


class _TritonSlicesBase(TritonKernel, Kernel):
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

    def config(self, device: str, head_dim: int, dtype: str):
        """The configuration a run on ``device`` uses: small tiles in the interpreter, else the
        table's (or the default rule's) for the GPU's architecture."""
        from attnbench.kernels.triton_slices.configs import config_for, interpreter_config

        if device_type(device) == "cpu":
            return interpreter_config(deterministic=self.deterministic)
        return config_for(device_arch(device), head_dim, dtype, deterministic=self.deterministic)

    def configuration(self, case) -> dict | None:
        if self.unsupported_reason(case):
            return None
        arch = None if device_type(case.device) == "cpu" else device_arch(case.device)
        described = self.config(case.device, case.shape.head_dim, case.dtype).describe()
        return {"arch": arch or "interpreter", **described}

    def prepare(self, inputs, mask):
        available = triton_availability(str(inputs.q.device))
        if not available.ok:
            raise Unsupported(available.reason)
        from attnbench.kernels.triton_slices.ops import check_shapes, make_plan, slice_attention

        config = self.config(str(inputs.q.device), inputs.q.shape[-1], str(inputs.q.dtype).removeprefix("torch."))
        try:
            plan = make_plan(mask, inputs.heads_q, inputs.heads_kv, inputs.q.device, config, batch=inputs.q.shape[0])
            check_shapes(inputs.q, inputs.k, inputs.v, plan)
        except ValueError as exc:
            raise Unsupported(f"{self.name}: {exc}") from None
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale

        def run() -> AttnOutput:
            out, lse = slice_attention(q, k, v, plan, scale)
            return AttnOutput(out, lse)

        return run

    def triton_launches(self, query: LaunchQuery) -> list[TritonLaunch]:
        from attnbench.kernels.triton_slices import ops
        from attnbench.kernels.triton_slices.configs import config_for

        if interpreting_now():
            raise UserError("TRITON_INTERPRET=1 is set: the kernels are interpreted, not compiled; unset it to inspect")
        if query.head_dim not in HEAD_DIMS:
            raise UserError(f"{self.name}: head_dim {query.head_dim} not supported "
                            f"(supports {', '.join(map(str, sorted(HEAD_DIMS)))})")
        config = config_for(query.arch, query.head_dim, query.dtype, deterministic=self.deterministic)
        try:
            return ops.declared_launches(query, config)
        except ValueError as exc:
            raise UserError(f"{self.name}: {exc}") from None


@register_kernel("triton_slices")
class TritonSlices(_TritonSlicesBase):
    name = "triton_slices"


@register_kernel("triton_slices_det")
class TritonSlicesDeterministic(_TritonSlicesBase):
    name = "triton_slices_det"
    description = "triton_slices with the deterministic backward (dq by its own kernel, no atomics)"
    deterministic = True
