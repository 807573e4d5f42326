"""Seeded inputs: the same case seed gives the same q, k, v and dO on every machine."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnbench.cases import Case, torch_dtype
from attnbench.kernels.base import AttnInputs, default_scale


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


def make_tensors(case: Case) -> CaseTensors:
    s = case.shape
    generator = torch.Generator(device="cpu").manual_seed(case.seed)
    dtype = torch_dtype(case.dtype)

    def draw(heads: int) -> torch.Tensor:
        x = torch.randn(s.batch, heads, s.seqlen, s.head_dim, generator=generator, dtype=torch.float32)
        return x.to(device=case.device, dtype=dtype)

    return CaseTensors(q=draw(s.heads_q), k=draw(s.heads_kv), v=draw(s.heads_kv), grad_out=draw(s.heads_q))
