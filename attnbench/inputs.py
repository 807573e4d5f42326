"""Seeded inputs: the same case seed gives the same q, k, v and dO on every machine, and the
same value at the same global token position whoever draws it.

The sequence is cut into blocks of :data:`BLOCK_TOKENS` positions; the values of one tensor
at one block (every batch entry and head) come from a generator seeded by a hash of (case
seed, tensor, block index). So any set of positions can be generated alone, in time
proportional to the blocks it touches: the single-process path draws every block
(:func:`make_tensors`), a context-parallel rank draws only the blocks of its own shard
(:func:`make_shard`), and both see identical numbers for the same positions, at any W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnbench.cases import Case, torch_dtype
from attnbench.kernels.base import AttnInputs, default_scale

#: positions per generated block (a shard cut inside a block draws that block whole)
BLOCK_TOKENS = 128
#: q, k, v, dO: (name, which heads count)
TENSORS = (("q", "heads_q"), ("k", "heads_kv"), ("v", "heads_kv"), ("grad_out", "heads_q"))

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value from a counter."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def block_seed(seed: int, tensor: int, block: int) -> int:
    """The generator seed of one block of one tensor (63 bits: manual_seed takes it as is)."""
    return _mix(_mix(_mix(seed & _MASK64) ^ tensor) ^ block) >> 1


@dataclass
class CaseTensors:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor

    def for_pass(self, needs_grad: bool) -> AttnInputs:
        """Fresh leaf views so autograd state never leaks between cases."""
        q, k, v = (t.detach().requires_grad_(needs_grad) for t in (self.q, self.k, self.v))
        return AttnInputs(q=q, k=k, v=v, scale=default_scale(q.shape[-1]))


def _draw(case: Case, tensor: int, heads: int, runs: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``[B, heads, sum of run lengths, D]`` in ``dtype`` (drawn in float32): the tensor's values
    at ``runs``, in order. Each block is drawn once (runs are sorted, so only the last block
    can be needed again)."""
    s = case.shape
    total = int((runs[:, 1] - runs[:, 0]).sum()) if len(runs) else 0
    out = torch.empty(s.batch, heads, total, s.head_dim, dtype=dtype)
    generator = torch.Generator(device="cpu")
    last_index, last = -1, None
    at = 0
    for a, b in runs:
        a, b = int(a), int(b)
        for block in range(a // BLOCK_TOKENS, (b - 1) // BLOCK_TOKENS + 1):
            if block != last_index:
                generator.manual_seed(block_seed(case.seed, tensor, block))
                last = torch.randn(s.batch, heads, BLOCK_TOKENS, s.head_dim, generator=generator)
                last_index = block
            base = block * BLOCK_TOKENS
            lo, hi = max(a, base) - base, min(b, base + BLOCK_TOKENS) - base
            out[:, :, at:at + hi - lo] = last[:, :, lo:hi]
            at += hi - lo
    return out


def make_shard(case: Case, runs, device: str | torch.device | None = None) -> CaseTensors:
    """q, k, v, dO at the global positions ``runs`` (``[n, 2]`` sorted, disjoint ``[start, stop)``),
    concatenated in order along the sequence dimension, in the case's dtype on ``device``
    (default: the case's device)."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    if len(runs) and (runs.min() < 0 or runs.max() > case.shape.seqlen):
        raise ValueError(f"positions outside [0, {case.shape.seqlen})")
    dtype = torch_dtype(case.dtype)
    target = case.device if device is None else device
    drawn = {
        name: _draw(case, index, getattr(case.shape, heads), runs, dtype).to(device=target)
        for index, (name, heads) in enumerate(TENSORS)
    }
    return CaseTensors(**drawn)


def make_tensors(case: Case) -> CaseTensors:
    """The whole sequence (every position) on the case's device."""
    return make_shard(case, [[0, case.shape.seqlen]])
