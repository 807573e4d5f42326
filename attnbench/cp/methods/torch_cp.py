"""`torch_cp`: PyTorch's own context parallelism,
``torch.distributed.tensor.experimental.context_parallel`` (DTensor ring attention behind
``scaled_dot_product_attention``). CUDA only: it needs a CUDA SDPA back end (flash,
efficient or cuDNN) with lse; elsewhere it is unavailable with that reason.

Only what SDPA expresses runs: full and causal. GQA/MQA: K and V heads are repeated to the
query heads before SDPA (differentiably; what PyTorch's ring then rotates is the repeated
K/V, which is what this costs). Tokens are laid out the way PyTorch shards them: causal with
its default head-tail balancer when S divides into 2W chunks (contiguous otherwise); full
always contiguous, with PyTorch's load balancing switched off (it refuses non-causal
attention with it on). The rotation of the K/V shards is the ``rotate`` parameter:
``allgather`` (PyTorch's default: one all-gather) or ``alltoall`` (a ring of permutes).

The local step is SDPA, not ``case.kernel``. SDPA returns no lse, so the accuracy check
covers out, dq, dk, dv. PyTorch's collectives run inside DTensor, outside attnbench's
counter: their bytes are recorded as not counted (unknown), beside the analytic figures of
PyTorch's algorithm (``expected_comm``), and there are no compute-only / communication-only
timings.
"""

from __future__ import annotations

import contextlib

import numpy as np

from attnbench.cp import register_cp_method
from attnbench.cp.analytic import ACCUMULATOR_BYTES, _elem
from attnbench.cp.base import CPMethod, CPRun, CPSupport, Plan, param, world_of
from attnbench.cp.dispatch import Layout, contiguous, zigzag
from attnbench.cp.slices import merge_runs
from attnbench.kernels.base import Availability

REASON = "PyTorch context_parallel needs CUDA"
ROTATE = ("allgather", "alltoall")


def torch_layout(seqlen: int, world: int, balanced: bool = True) -> Layout:
    """The token split PyTorch's context_parallel applies (its head-tail balancer when
    ``balanced`` and S divides into 2W chunks, else contiguous)."""
    if not balanced or seqlen % (2 * world):
        return contiguous(seqlen, world)
    try:
        from torch.distributed.tensor.experimental._context_parallel._load_balancer import _HeadTailLoadBalancer

        order = _HeadTailLoadBalancer(seqlen, world, "cpu")._generate_indices()[0].cpu().numpy().reshape(world, -1)
    except Exception:  # noqa: BLE001 - private API moved: fall back to its documented behaviour
        return zigzag(seqlen, world)
    return Layout("torch_head_tail", seqlen, tuple(merge_runs(np.stack([p, p + 1], axis=1)) for p in order))


@register_cp_method("torch_cp")
class TorchCP(CPMethod):
    name = "torch_cp"
    description = "torch.distributed.tensor.experimental.context_parallel (DTensor ring SDPA); GQA by repeated K/V"
    support = {"cuda": CPSupport(masks=frozenset({"full", "causal"}), note="SDPA expresses full and causal only")}
    params = {"rotate": "K/V rotation: allgather (PyTorch's default) or alltoall"}
    uses_kernel = False
    separable = False
    counts_comm = False

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

    def rotate(self, case) -> str:
        return str(param(case, "rotate", "allgather"))

    def check(self, case):
        if case.shape.seqlen % world_of(case):
            return f"seqlen {case.shape.seqlen} is not divisible by the world size {world_of(case)}"
        if self.rotate(case) not in ROTATE:
            return f"rotate {self.rotate(case)!r} is not one of {', '.join(ROTATE)}"
        return None

    def ring_sizes(self, case):
        return (world_of(case),)

    def plan(self, case, mask):
        layout = torch_layout(mask.seqlen, world_of(case), balanced=mask.name == "causal")
        return Plan(layout=layout, ring=layout, ulysses=1, rings=self.ring_sizes(case),
                    extra={"rotate": self.rotate(case), "load_balance": layout.strategy != "contiguous"})

    def prepare(self, ctx, plan):
        import torch
        import torch.nn.functional as F
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.experimental import context_parallel
        from torch.distributed.tensor.experimental._attention import _cp_options, set_rotate_method

        mesh = init_device_mesh("cuda", (ctx.world,))
        causal = ctx.mask.name == "causal"
        balanced = plan.layout.strategy != "contiguous"
        rotate = self.rotate(ctx.case)
        S = ctx.mask.seqlen
        groups = ctx.case.shape.heads_q // ctx.case.shape.heads_kv

        @contextlib.contextmanager
        def scope():
            # context_parallel shards its buffers in place; ours are already sharded, so it
            # gets a throw-away one of the global length and only patches SDPA. Its load
            # balancing follows _cp_options at entry: off for contiguous layouts.
            saved = (_cp_options.enable_load_balance, _cp_options.rotate_method)
            _cp_options.enable_load_balance = balanced
            set_rotate_method(rotate)
            dummy = torch.zeros(S, device=ctx.device)
            try:
                with context_parallel(mesh, buffers=[dummy], buffer_seq_dims=[0], no_restore_buffers={dummy}):
                    yield
            finally:
                _cp_options.enable_load_balance, _cp_options.rotate_method = saved

        def forward(q, k, v, need_lse):
            if groups > 1:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=ctx.scale), None

        return CPRun(forward, scope)

    def expected_comm(self, case):
        """PyTorch's algorithm (torch 2.x, _context_parallel/_attention.py): forward rotates the
        repeated K/V (allgather: one all-gather; alltoall: W - 1 permutes); backward rotates
        them again and sends the float32 dK/dV W times (permutes)."""
        s, W = case.shape, world_of(case)
        if W == 1:
            return {"forward": (0, 0), **({"backward": (0, 0)} if case.pass_.needs_grad else {})}
        kv = 2 * s.batch * s.heads_q * (s.seqlen // W) * s.head_dim
        calls = 1 if self.rotate(case) == "allgather" else W - 1
        forward = ((W - 1) * kv * _elem(case), calls)
        out = {"forward": forward}
        if case.pass_.needs_grad:
            out["backward"] = (forward[0] + W * kv * ACCUMULATOR_BYTES, forward[1] + W)
        return out
