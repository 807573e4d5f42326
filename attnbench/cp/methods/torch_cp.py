"""`torch_cp`: PyTorch's own context parallelism,
``torch.distributed.tensor.experimental.context_parallel`` (DTensor ring attention behind
``scaled_dot_product_attention``). CUDA only: it needs a CUDA SDPA back end (flash,
efficient or cuDNN) with lse; elsewhere it is unavailable with that reason.

Only what SDPA expresses runs: full and causal, equal head counts. Tokens are laid out the
way PyTorch shards them (its default head-tail balancer when S divides into 2W chunks,
contiguous otherwise); the local step is SDPA, not ``case.kernel``. SDPA returns no lse, so
the accuracy check covers out, dq, dk, dv. PyTorch's collectives are not counted here.
"""

from __future__ import annotations

import contextlib

import numpy as np

from attnbench.cp import register_cp_method
from attnbench.cp.base import CPMethod, CPRun, CPSupport, Plan, world_of
from attnbench.cp.dispatch import Layout, contiguous, zigzag
from attnbench.cp.slices import merge_runs
from attnbench.kernels.base import Availability

REASON = "PyTorch context_parallel needs CUDA"


def torch_layout(seqlen: int, world: int) -> Layout:
    """The token split PyTorch's context_parallel applies by default."""
    try:
        from torch.distributed.tensor.experimental._context_parallel._load_balancer import (
            _create_default_load_balancer,
        )

        balancer = _create_default_load_balancer(seqlen, world, "cpu")
    except Exception:  # noqa: BLE001 - private API moved: fall back to its documented behaviour
        return zigzag(seqlen, world) if seqlen % (2 * world) == 0 else contiguous(seqlen, world)
    if balancer is None:
        return contiguous(seqlen, world)
    order = balancer._generate_indices()[0].cpu().numpy().reshape(world, -1)
    return Layout("torch_head_tail", seqlen, tuple(merge_runs(np.stack([p, p + 1], axis=1)) for p in order))


@register_cp_method("torch_cp")
class TorchCP(CPMethod):
    name = "torch_cp"
    description = "torch.distributed.tensor.experimental.context_parallel (DTensor ring SDPA)"
    support = {"cuda": CPSupport(masks=frozenset({"full", "causal"}), gqa=False,
                                 note="SDPA expresses full and causal only")}
    uses_kernel = False

    def availability(self, device):
        import torch

        if not device.startswith("cuda"):
            return Availability(False, REASON)
        if not torch.cuda.is_available():
            return Availability(False, f"{REASON} (no CUDA device here)")
        try:
            from torch.distributed.tensor.experimental import context_parallel  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"context_parallel not importable: {exc}")
        return Availability(True)

    def check(self, case):
        if case.shape.seqlen % world_of(case):
            return f"seqlen {case.shape.seqlen} is not divisible by the world size {world_of(case)}"
        return None

    def plan(self, case, mask):
        layout = torch_layout(mask.seqlen, world_of(case))
        return Plan(layout=layout, ring=layout, ulysses=1)

    def prepare(self, ctx, plan):
        import torch
        import torch.nn.functional as F
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.experimental import context_parallel

        mesh = init_device_mesh("cuda", (ctx.world,))
        causal = ctx.mask.name == "causal"
        S = ctx.mask.seqlen

        @contextlib.contextmanager
        def scope():
            # context_parallel shards its buffers in place; ours are already sharded, so it
            # gets a throw-away one of the global length and only patches SDPA.
            dummy = torch.zeros(S, device=ctx.device)
            with context_parallel(mesh, buffers=[dummy], buffer_seq_dims=[0], no_restore_buffers={dummy}):
                yield

        def forward(q, k, v, need_lse):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=ctx.scale), None

        return CPRun(forward, scope)

    def expected_comm(self, case):
        return {}
