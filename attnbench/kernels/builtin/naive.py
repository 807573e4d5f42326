"""`naive`: materialised scores in eager PyTorch (the textbook formula, O(S^2) memory)."""

from __future__ import annotations

import torch

from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Kernel, MemoryModel, Support, repeat_kv

#: A dense mask for every kernel that needs one; memory is checked by the prediction.
DENSE_MASK_LIMIT = 1 << 36


@register_kernel("naive")
class NaiveKernel(Kernel):
    name = "naive"
    description = "materialised scores, float32 softmax, eager PyTorch"
    support = {"cpu": Support(), "cuda": Support()}
    work = "dense"
    # scores (fp32) + probabilities (fp32 + input dtype copy) + saved for backward
    memory = MemoryModel(per_score=14.0, per_mask_element=1.0)

    def prepare(self, inputs, mask):
        from attnbench.masks.convert import dense

        blocked = ~dense(mask, max_elements=DENSE_MASK_LIMIT).to(inputs.q.device).unsqueeze(0)
        groups = inputs.heads_q // inputs.heads_kv
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale

        def run() -> AttnOutput:
            kr, vr = repeat_kv(k, groups), repeat_kv(v, groups)
            scores = torch.matmul(q, kr.transpose(-2, -1)).float() * scale
            scores = scores.masked_fill(blocked, float("-inf"))
            lse = torch.logsumexp(scores, dim=-1)
            probs = torch.exp(scores - lse.unsqueeze(-1)).to(q.dtype)
            return AttnOutput(torch.matmul(probs, vr), lse)

        return run
