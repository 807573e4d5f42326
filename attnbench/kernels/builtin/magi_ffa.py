"""`magi_ffa`: MagiAttention's flexible flash attention (``flex_flash_attn_func``), slice-driven
like ``triton_slices``: each slice becomes ``q_ranges[i]``, ``k_ranges[i]`` (int32
``[N, 2]``, half-open) and ``attn_type_map[i]`` (int32: 0 full, 1 causal bottom-right,
2 inverse causal, 3 bidirectional causal: exactly our slice kinds). Tokens are packed
``[T, H, D]``; the batch is laid end to end (ranges offset by ``b * S``). Per-head masks
(block-sparse) lay the query heads end to end too (K/V expanded to the query heads; ranges
offset by ``(b * Hq + h) * S``). Hopper (sm90) only."""

from __future__ import annotations

import numpy as np
import torch

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput, Support, repeat_kv
from attnbench.kernels.builtin._external import ExternalKernel, HALF, accepts, import_library, split_out_lse


def magi_ranges(mask, batch: int, heads_q: int) -> dict:
    """q_ranges, k_ranges (int32 [N, 2]) and attn_type_map (int32 [N]) for the packed layout, and
    whether heads are laid on the token axis (``per_head``)."""
    t = mask.slices
    S = mask.seqlen
    per_head = t.head is not None
    if per_head:
        blocks = (np.arange(batch)[:, None] * heads_q + t.head[None, :].astype(np.int64)).reshape(-1)  # [B * N]
        offset = blocks * S
        reps = batch
    else:
        offset = np.repeat(np.arange(batch, dtype=np.int64) * S, len(t))
        reps = batch
    q0, q1 = np.tile(t.q0, reps) + offset, np.tile(t.q1, reps) + offset
    k0, k1 = np.tile(t.k0, reps) + offset, np.tile(t.k1, reps) + offset
    total = batch * S * (heads_q if per_head else 1)
    if total >= 2**31:
        raise Unsupported("magi_ffa: token offsets do not fit int32")
    return {
        "q_ranges": np.stack([q0, q1], axis=1).astype(np.int32),
        "k_ranges": np.stack([k0, k1], axis=1).astype(np.int32),
        "attn_type_map": np.tile(t.kind.astype(np.int32), reps),
        "max_seqlen_q": int((t.q1 - t.q0).max()),
        "max_seqlen_k": int((t.k1 - t.k0).max()),
        "per_head": per_head,
    }


def flex_flash_attn_function(module_api, module_functional):
    fn = getattr(module_api, "flex_flash_attn_func", None) if module_api is not None else None
    return fn or getattr(module_functional, "flex_flash_attn_func")


@register_kernel("magi_ffa")
class MagiFFA(ExternalKernel):
    name = "magi_ffa"
    aliases = ('magi', 'magi_attention', 'magiattention', 'ffa', 'flex_flash_attn')
    description = "MagiAttention flex_flash_attn_func: q_ranges/k_ranges/attn_type_map straight from the slices"
    support = {"cuda": Support(dtypes=HALF, head_dims=frozenset({64, 128}))}
    work = "sparse"
    library_module = "magi_attention"
    library_label = "magi_attention (MagiAttention)"
    exact_sm = (9, 0)
    arch_name = "Hopper"

    def prepare(self, inputs, mask):
        import_library("magi_attention", "magi_attention")
        try:
            api = import_library("magi_attention.api", "magi_attention")
        except Unsupported:
            api = None
        fn = flex_flash_attn_function(api, None if api is not None and hasattr(api, "flex_flash_attn_func")
                                      else import_library("magi_attention.functional.flex_flash_attn", "magi_attention"))
        q, k, v, scale = inputs.q, inputs.k, inputs.v, inputs.scale
        B, Hq, S, D = q.shape
        groups = Hq // inputs.heads_kv
        r = magi_ranges(mask, B, Hq)
        device = q.device
        kwargs = {
            "q_ranges": torch.from_numpy(r["q_ranges"]).to(device),
            "k_ranges": torch.from_numpy(r["k_ranges"]).to(device),
            "attn_type_map": torch.from_numpy(r["attn_type_map"]).to(device),
            "softmax_scale": scale,
        }
        for name in ("max_seqlen_q", "max_seqlen_k"):  # required by older releases, optional later
            if accepts(fn, name):
                kwargs[name] = r[name]
        per_head = r["per_head"]

        def run() -> AttnOutput:
            if per_head:  # [B, Hq, S, D] -> [B*Hq*S, 1, D]
                qq = q.reshape(B * Hq * S, 1, D)
                kk = repeat_kv(k, groups).reshape(B * Hq * S, 1, D)
                vv = repeat_kv(v, groups).reshape(B * Hq * S, 1, D)
                out, lse = split_out_lse(fn(qq, kk, vv, **kwargs))
                out = out.reshape(B, Hq, S, D)
                lse = lse.reshape(B, Hq, S) if lse is not None and lse.numel() == B * Hq * S else None
                return AttnOutput(out, lse)
            qq, kk, vv = (x.transpose(1, 2).reshape(B * S, x.shape[1], D) for x in (q, k, v))
            out, lse = split_out_lse(fn(qq, kk, vv, **kwargs))
            out = out.reshape(B, S, Hq, D).transpose(1, 2)
            if lse is not None and tuple(lse.shape) == (B * S, Hq):
                lse = lse.reshape(B, S, Hq).permute(0, 2, 1)
            else:
                lse = None
            return AttnOutput(out, lse)

        return run
