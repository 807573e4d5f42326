"""The external-library adapters (fa2, fa3, te_fused, xformers, flashinfer, magi_ffa) with the
library replaced: a fake module in ``sys.modules`` records the arguments and computes the
attention from them with the library's documented semantics (cu_seqlens + causal + window,
xFormers biases, BSR blocks, MagiAttention ranges), independently of attnbench's slices. So
the conversion is checked end to end: the adapter's output (and gradients) must equal the
float64 reference of the mask. None of these libraries can be imported on this machine;
their real runs are listed in README ("External libraries").
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch

from attnbench.cases import Pass
from attnbench.kernels import KERNELS
from attnbench.kernels.base import AttnInputs
from attnbench.masks import MASKS, build_mask
from attnbench.measure.reference import reference_attention
from tests.helpers import small_case

NEG = float("-inf")


# -- a tiny dense attention used by every fake ------------------------------------------------
def attend(q, k, v, allowed, scale):
    """q [Tq, Hq, D], k/v [Tk, Hkv, D], allowed [Hq or 1, Tq, Tk] -> out [Tq, Hq, D], lse [Hq, Tq]."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = torch.einsum("qhd,khd->hqk", q, kk) * scale
    s = s.masked_fill(~allowed, NEG)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None])
    return torch.einsum("hqk,khd->qhd", p, vv), lse


def flash_allowed(cu, T, causal, window):
    pos = torch.arange(T)
    doc = torch.searchsorted(torch.as_tensor(cu, dtype=torch.int64), pos, right=True) - 1
    ok = doc[:, None] == doc[None, :]
    d = pos[None, :] - pos[:, None]
    wl, wr = window
    if causal:
        ok &= d <= 0
    if wl >= 0:
        ok &= -d <= wl
    if wr >= 0:
        ok &= d <= wr
    return ok[None]


def fake_module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.calls = []
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def make_flash(name, returns_tuple=True):
    mod = fake_module(name)

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        return_attn_probs=False, **extra):
        mod.calls.append(dict(fn="dense", causal=causal, window_size=window_size, softmax_scale=softmax_scale,
                              shape=tuple(q.shape), return_attn_probs=return_attn_probs))
        B, S = q.shape[:2]
        outs, lses = zip(*(attend(q[b], k[b], v[b], flash_allowed([0, S], S, causal, window_size), softmax_scale)
                           for b in range(B)))
        out, lse = torch.stack(outs), torch.stack(lses)
        return (out, lse, None) if return_attn_probs else out

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1), return_attn_probs=False,
                               **extra):
        assert cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32
        assert max_seqlen_q == int(torch.diff(cu_seqlens_q).max())
        mod.calls.append(dict(fn="varlen", causal=causal, window_size=window_size, cu_seqlens=cu_seqlens_q.tolist(),
                              max_seqlen=max_seqlen_q, shape=tuple(q.shape)))
        out, lse = attend(q, k, v, flash_allowed(cu_seqlens_q.tolist(), q.shape[0], causal, window_size),
                          softmax_scale)
        return (out, lse, None) if return_attn_probs else out

    mod.flash_attn_func = flash_attn_func
    mod.flash_attn_varlen_func = flash_attn_varlen_func
    return mod


def make_te():
    root = fake_module("transformer_engine")
    mod = fake_module("transformer_engine.pytorch")
    root.pytorch = mod

    class DotProductAttention:
        def __init__(self, num_attention_heads, kv_channels, num_gqa_groups=None, attention_dropout=0.0,
                     qkv_format="sbhd", attn_mask_type="causal", window_size=None, softmax_scale=None, **extra):
            self.init = dict(locals())
            self.init.pop("self")
            mod.calls.append(dict(init=self.init))

        def __call__(self, q, k, v, cu_seqlens_q=None, cu_seqlens_kv=None, max_seqlen_q=None, max_seqlen_kv=None,
                     **extra):
            i = self.init
            assert i["qkv_format"] == "thd" and cu_seqlens_q.dtype == torch.int32
            mod.calls.append(dict(cu_seqlens=cu_seqlens_q.tolist(), max_seqlen=max_seqlen_q))
            causal = i["attn_mask_type"] == "padding_causal"
            assert i["attn_mask_type"] in ("padding", "padding_causal")
            out, _ = attend(q, k, v, flash_allowed(cu_seqlens_q.tolist(), q.shape[0], causal, i["window_size"]),
                            i["softmax_scale"])
            return out.reshape(q.shape[0], -1)

    mod.DotProductAttention = DotProductAttention
    return {"transformer_engine": root, "transformer_engine.pytorch": mod}


def make_xformers():
    root = fake_module("xformers")
    ops = fake_module("xformers.ops")
    root.ops = ops

    class LowerTriangularMask:
        def allowed(self, T):
            return flash_allowed([0, T], T, True, (-1, -1))

    class LocalAttentionFromBottomRightMask:
        def __init__(self, window_left, window_right):
            self.window = (window_left, window_right)

        def allowed(self, T):
            return flash_allowed([0, T], T, False, self.window)

    class BlockDiagonalMask:
        causal = False

        def __init__(self, lengths):
            self.cu = np.concatenate([[0], np.cumsum(lengths)])

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen=None):
            return cls(list(q_seqlen))

        def allowed(self, T):
            assert self.cu[-1] == T
            return flash_allowed(self.cu, T, self.causal, (-1, -1))

    class BlockDiagonalCausalMask(BlockDiagonalMask):
        causal = True

    ops.fmha = types.SimpleNamespace(attn_bias=types.SimpleNamespace(
        LowerTriangularMask=LowerTriangularMask, LocalAttentionFromBottomRightMask=LocalAttentionFromBottomRightMask,
        BlockDiagonalMask=BlockDiagonalMask, BlockDiagonalCausalMask=BlockDiagonalCausalMask))

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, **extra):
        ops.calls.append(dict(bias=attn_bias, shape=tuple(query.shape), kv_stride=key.stride()))
        shape = query.shape
        if query.dim() == 5:  # [B, M, G, H, K]: flatten G, H (K/V are broadcast over H)
            query, key, value = (x.reshape(*x.shape[:2], -1, x.shape[-1]) for x in (query, key, value))
        B, T = query.shape[:2]
        allowed = attn_bias.allowed(T) if attn_bias is not None else torch.ones(1, T, T, dtype=torch.bool)
        out = torch.stack([attend(query[b], key[b], value[b], allowed, scale)[0] for b in range(B)])
        return out.reshape(shape)

    ops.memory_efficient_attention = memory_efficient_attention
    return {"xformers": root, "xformers.ops": ops}


def make_flashinfer():
    mod = fake_module("flashinfer")
    sparse = fake_module("flashinfer.sparse")
    mod.sparse = sparse

    def single_prefill_with_kv_cache(q, k, v, causal=False, sm_scale=None, return_lse=False, **extra):
        mod.calls.append(dict(fn="single", causal=causal))
        out, lse = attend(q, k, v, flash_allowed([0, q.shape[0]], q.shape[0], causal, (-1, -1)), sm_scale)
        return (out, lse.transpose(0, 1)) if return_lse else out

    class BlockSparseAttentionWrapper:
        def __init__(self, workspace, backend="auto"):
            pass

        def plan(self, indptr, indices, M, N, R, C, num_qo_heads, num_kv_heads, head_dim, sm_scale=None,
                 q_data_type=None, **extra):
            assert indptr.dtype == torch.int32 and indices.dtype == torch.int32
            mod.calls.append(dict(fn="bsr", M=M, N=N, R=R, C=C, nnz=len(indices), heads=(num_qo_heads, num_kv_heads)))
            dense_blocks = torch.zeros(M // R, N // C, dtype=torch.bool)
            for row in range(M // R):
                dense_blocks[row, indices[indptr[row]:indptr[row + 1]].long()] = True
            self.allowed = dense_blocks.repeat_interleave(R, 0).repeat_interleave(C, 1)[None]
            self.scale = sm_scale

        def run(self, q, k, v, **extra):
            return attend(q, k, v, self.allowed, self.scale)[0]

    class VariableBlockSparseAttentionWrapper:
        def __init__(self, workspace, backend="auto"):
            pass

        def plan(self, block_mask_map, block_row_sz, block_col_sz, num_qo_heads, num_kv_heads, head_dim,
                 sm_scale=None, q_data_type=None, **extra):
            mod.calls.append(dict(fn="variable", shape=tuple(block_mask_map.shape), heads=(num_qo_heads, num_kv_heads)))
            allowed = []
            for h in range(num_kv_heads):
                rows = block_mask_map[h].repeat_interleave(block_row_sz[h].long(), 0)
                allowed.append(rows.repeat_interleave(block_col_sz[h].long(), 1))
            self.allowed = torch.stack(allowed).repeat_interleave(num_qo_heads // num_kv_heads, 0)
            self.scale = sm_scale

        def run(self, q, k, v, **extra):  # HND
            out = attend(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), self.allowed, self.scale)[0]
            return out.transpose(0, 1)

    mod.single_prefill_with_kv_cache = single_prefill_with_kv_cache
    mod.BlockSparseAttentionWrapper = BlockSparseAttentionWrapper
    sparse.VariableBlockSparseAttentionWrapper = VariableBlockSparseAttentionWrapper
    return {"flashinfer": mod, "flashinfer.sparse": sparse}


def make_magi():
    root = fake_module("magi_attention")
    api = fake_module("magi_attention.api")
    root.api = api

    def flex_flash_attn_func(q, k, v, q_ranges, k_ranges, attn_type_map=None, *, softmax_scale=None, **extra):
        assert q_ranges.dtype == torch.int32 and k_ranges.dtype == torch.int32 and attn_type_map.dtype == torch.int32
        api.calls.append(dict(n=len(q_ranges), types=sorted(set(attn_type_map.tolist())), tokens=q.shape[0]))
        T = q.shape[0]
        allowed = torch.zeros(T, T, dtype=torch.bool)
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        for (a, b), (c, d), kind in zip(q_ranges.tolist(), k_ranges.tolist(), attn_type_map.tolist()):
            ok = (i >= a) & (i < b) & (j >= c) & (j < d)
            if kind in (1, 3):  # causal, bottom-right aligned
                ok &= (j - c) <= (i - a) + ((d - c) - (b - a))
            if kind in (2, 3):  # inverse causal, top-left aligned
                ok &= (j - c) >= (i - a)
            allowed |= ok
        out, lse = attend(q, k, v, allowed[None], softmax_scale)
        return out, lse.transpose(0, 1)  # lse [T, H]

    api.flex_flash_attn_func = flex_flash_attn_func
    return {"magi_attention": root, "magi_attention.api": api}


FAKES = {
    "fa2": lambda: {"flash_attn": make_flash("flash_attn")},
    "fa3": lambda: {"flash_attn_interface": make_flash("flash_attn_interface")},
    "te_fused": make_te,
    "xformers": make_xformers,
    "flashinfer": make_flashinfer,
    "magi_ffa": make_magi,
}
LIBRARY = {"fa2": "flash_attn", "fa3": "flash_attn_interface", "te_fused": "transformer_engine",
           "xformers": "xformers", "flashinfer": "flashinfer", "magi_ffa": "magi_attention"}
PARAMS = {  # small sizes; seed 25 gives 4 documents at 250 tokens
    "sliding_window": {"window": 24}, "sliding_window_causal": {"window": 24},
    "full_document": {"seed": 25}, "causal_document": {"seed": 25}, "share_question": {"seed": 25},
    "causal_blockwise": {"seed": 25}, "prefix_lm_document": {"seed": 25}, "prefix_lm_causal": {"prefix": 77},
    "global_sliding_window": {"global_tokens": 16, "window": 24}, "block_causal_document": {"block": 24, "seed": 34},
    "causal_sink_window": {"sink": 4, "window": 24}, "block_sparse": {"block": 25, "density": 0.4},
    "variable_block_sparse": {"avg_block": 160, "density": 0.5},
}


@pytest.fixture
def fake(monkeypatch):
    def install(kernel):
        modules = FAKES[kernel]()
        for name, mod in modules.items():
            monkeypatch.setitem(sys.modules, name, mod)
        return modules
    return install


def run_adapter(kernel_name, mask_name, *, batch=2, heads=(4, 2), seqlen=250, head_dim=16, backward=True):
    g = torch.Generator().manual_seed(1)
    Hq, Hkv = heads
    family = MASKS.get(mask_name)
    mask = build_mask(mask_name, seqlen, PARAMS.get(mask_name, {}), heads=Hq if family.dynamic else 1)
    q, k, v = (torch.randn(batch, h, seqlen, head_dim, generator=g).requires_grad_(backward) for h in (Hq, Hkv, Hkv))
    do = torch.randn(batch, Hq, seqlen, head_dim, generator=g)
    inputs = AttnInputs(q=q, k=k, v=v, scale=head_dim ** -0.5)
    result = KERNELS.get(kernel_name).prepare(inputs, mask)()
    ref = reference_attention(q, k, v, mask, grad_out=do if backward else None, scale=inputs.scale)
    got = {"out": result.out}
    if result.lse is not None:
        got["lse"] = result.lse
    if backward:
        got.update(zip(("dq", "dk", "dv"), torch.autograd.grad(result.out, (q, k, v), do)))
    for key, actual in got.items():
        expected = getattr(ref, key)
        assert actual.shape == expected.shape, (key, actual.shape, expected.shape)
        err = ((actual.double() - expected).norm() / expected.norm()).item()
        assert err < 1e-5, (kernel_name, mask_name, key, err)
    return got


def supported_masks(kernel_name):
    masks = KERNELS.get(kernel_name).support["cuda"].masks
    return sorted(masks) if masks is not None else sorted(MASKS.names())


CASES = [(kernel, mask) for kernel in FAKES for mask in supported_masks(kernel)]


@pytest.mark.parametrize(("kernel_name", "mask_name"), CASES)
def test_conversion_reproduces_the_mask(fake, kernel_name, mask_name):
    modules = fake(kernel_name)
    backward = Pass.backward in KERNELS.get(kernel_name).support["cuda"].passes
    got = run_adapter(kernel_name, mask_name, backward=backward)
    calls = [c for m in modules.values() for c in m.calls]
    assert calls, "the library was not called"
    if kernel_name in ("fa2", "fa3", "magi_ffa") or (kernel_name == "flashinfer" and mask_name in ("full", "causal")):
        assert "lse" in got  # these return the lse too


def test_flash_arguments(fake):
    mods = fake("fa2")
    run_adapter("fa2", "causal_document", backward=False)
    call = mods["flash_attn"].calls[-1]
    mask = build_mask("causal_document", 250, PARAMS["causal_document"])
    cu = mask.varlen.cu_seqlens.tolist()
    assert call["fn"] == "varlen" and call["causal"] and call["window_size"] == (-1, 0)
    assert call["cu_seqlens"] == cu[:-1] + [250 + c for c in cu]  # two sequences packed
    assert call["max_seqlen"] == int(np.diff(cu).max()) and call["shape"] == (500, 4, 16)
    run_adapter("fa2", "sliding_window", backward=False)
    call = mods["flash_attn"].calls[-1]
    assert call["fn"] == "dense" and call["window_size"] == (24, 24) and not call["causal"]
    run_adapter("fa2", "sliding_window_causal", backward=False)
    assert mods["flash_attn"].calls[-1]["window_size"] == (24, 0)


def test_te_arguments(fake):
    mods = fake("te_fused")
    run_adapter("te_fused", "sliding_window_causal", backward=False)
    init = mods["transformer_engine.pytorch"].calls[0]["init"]
    assert init["qkv_format"] == "thd" and init["attn_mask_type"] == "padding_causal"
    assert init["window_size"] == (24, 0) and init["num_gqa_groups"] == 2 and init["num_attention_heads"] == 4


def test_xformers_biases_and_gqa_without_copies(fake):
    mods = fake("xformers")
    run_adapter("xformers", "full_document", backward=False)
    call = mods["xformers.ops"].calls[-1]
    assert type(call["bias"]).__name__ == "BlockDiagonalMask" and call["shape"][:2] == (1, 500)
    assert call["shape"] == (1, 500, 2, 2, 16)  # 5-D GQA form
    run_adapter("xformers", "sliding_window", backward=False)
    call = mods["xformers.ops"].calls[-1]
    assert call["bias"].window == (24, 24) and call["kv_stride"][3] == 0  # K/V broadcast over the group


def test_flashinfer_block_indices(fake):
    mods = fake("flashinfer")
    run_adapter("flashinfer", "block_sparse", backward=False)
    call = mods["flashinfer"].calls[-1]
    mask = build_mask("block_sparse", 250, PARAMS["block_sparse"], heads=4)
    assert call["M"] == call["N"] == 4 * 250 and call["R"] == call["C"] == 25
    assert call["nnz"] * 25 * 25 == mask.area_total  # every selected block listed once


def test_flashinfer_refuses_unaligned_blocks(fake):
    from attnbench.errors import Unsupported

    fake("flashinfer")
    with pytest.raises(Unsupported, match="multiple of the block"):
        run_adapter("flashinfer", "block_sparse", seqlen=240, backward=False)  # block 25


def test_magi_ranges_are_the_slices(fake):
    mods = fake("magi_ffa")
    run_adapter("magi_ffa", "prefix_lm_document", backward=False)
    call = mods["magi_attention.api"].calls[-1]
    mask = build_mask("prefix_lm_document", 250, PARAMS["prefix_lm_document"])
    assert call["n"] == 2 * mask.num_slices and call["tokens"] == 500
    run_adapter("magi_ffa", "block_sparse", backward=False)
    assert mods["magi_attention.api"].calls[-1]["tokens"] == 2 * 4 * 250  # heads laid on the token axis


def test_support_matrices():
    flash_six = {"full", "causal", "sliding_window", "sliding_window_causal", "full_document", "causal_document"}
    for name in ("fa2", "fa3", "te_fused", "xformers"):
        assert set(KERNELS.get(name).support["cuda"].masks) == flash_six, name
    assert {"block_sparse", "variable_block_sparse"} <= set(KERNELS.get("flashinfer").support["cuda"].masks)
    assert KERNELS.get("flashinfer").support["cuda"].passes == frozenset({Pass.forward})
    assert KERNELS.get("magi_ffa").support["cuda"].masks is None  # every slice mask
    case = small_case("fa2", "share_question", dtype="bfloat16").model_copy(update={"device": "cuda"})
    assert "share_question" in KERNELS.get("fa2").support["cuda"].reason_against(case)


@pytest.mark.parametrize("kernel_name", sorted(FAKES))
def test_availability_reasons(fake, monkeypatch, kernel_name):
    kernel = KERNELS.get(kernel_name)
    if LIBRARY[kernel_name] not in sys.modules:
        assert kernel.availability("cpu").reason.endswith("not installed")
    fake(kernel_name)
    assert kernel.availability("cpu").reason.startswith("needs CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (8, 0))
    available = kernel.availability("cuda")
    if kernel_name in ("fa3", "magi_ffa"):
        assert not available.ok and "needs Hopper (sm90)" in available.reason
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
        assert kernel.availability("cuda").ok
    else:
        assert available.ok, available.reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (7, 0))
    if kernel_name != "xformers":
        assert not kernel.availability("cuda").ok
