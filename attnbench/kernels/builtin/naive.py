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
    aliases = ('eager',)
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

    slice_devices = frozenset({"cpu", "cuda"})

    def attend_slices(self, q, k, v, local, scale):
        allowed = local.dense(q.device)
        groups = q.shape[1] // k.shape[1]
        return AttnOutput(*_MaskedAttention.apply(q, repeat_kv(k, groups), repeat_kv(v, groups), allowed, scale))

    has_slice_backward = True

    def attend_slices_backward(self, q, k, v, out, lse, dout, local, scale):
        """The ring step's backward in float32 from the merged lse (no autograd, no recompute
        of the step's own lse): P = exp(S - lse), dS = P (dO V^T - rowsum(dO O))."""
        allowed = local.dense(q.device)
        B, Hq, Lq, D = q.shape
        Hkv, Lk = k.shape[1], k.shape[2]
        g = Hq // Hkv
        qg = q.float().reshape(B, Hkv, g, Lq, D)
        kf, vf = k.float().unsqueeze(2), v.float().unsqueeze(2)  # [B, Hkv, 1, Lk, D]
        lse_g = lse.float().reshape(B, Hkv, g, Lq, 1)
        lse_g = torch.where(torch.isfinite(lse_g), lse_g, torch.zeros_like(lse_g))
        scores = torch.matmul(qg, kf.transpose(-2, -1)).mul_(scale)
        p = scores.sub_(lse_g).masked_fill_(~allowed, float("-inf")).exp_()
        do = dout.float().reshape(B, Hkv, g, Lq, D)
        delta = (do * out.float().reshape(B, Hkv, g, Lq, D)).sum(-1, keepdim=True)
        dv = torch.matmul(p.transpose(-2, -1), do).sum(2)
        ds = p.mul_(torch.matmul(do, vf.transpose(-2, -1)).sub_(delta))
        dq = torch.matmul(ds, kf).mul_(scale).reshape(B, Hq, Lq, D)
        dk = torch.matmul(ds.transpose(-2, -1), qg).sum(2).mul_(scale)
        return dq, dk, dv


class _MaskedAttention(torch.autograd.Function):
    """Masked attention returning (out, lse) with an analytic backward (float32 math).

    Unlike autograd through ``logsumexp``, rows with no allowed key (common in one step of
    a ring) give zero gradients instead of NaN; the lse gradient is honoured (dS += P * dlse).
    """

    @staticmethod
    def forward(ctx, q, k, v, allowed, scale):
        scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        p = torch.exp(scores - lse_safe.unsqueeze(-1))
        out = torch.matmul(p, v.float())
        ctx.save_for_backward(q, k, v, p, out)
        ctx.scale = scale
        return out.to(q.dtype), lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, p, out = ctx.saved_tensors
        scale = ctx.scale
        do = dout.float() if dout is not None else torch.zeros_like(out)
        dv = torch.matmul(p.transpose(-2, -1), do)
        dp = torch.matmul(do, v.float().transpose(-2, -1))
        delta = (do * out).sum(dim=-1, keepdim=True)
        if dlse is not None:
            delta = delta - dlse.float().unsqueeze(-1)
        ds = p * (dp - delta)
        dq = torch.matmul(ds, k.float()) * scale
        dk = torch.matmul(ds.transpose(-2, -1), q.float()) * scale
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None
