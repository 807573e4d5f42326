"""Every kernel against the chunked reference, on every mask, pass and dtype it supports."""

from __future__ import annotations

import pytest
import torch

from attnbench.cases import Pass
from attnbench.kernels import KERNELS
from attnbench.masks import MASKS, build_mask
from attnbench.measure.accuracy import compare_to_reference
from attnbench.measure.reference import reference_attention
from attnbench.inputs import make_tensors
from attnbench.tolerance import tolerances
from tests.helpers import small_case

CPU_KERNELS = ["naive", "sdpa", "sdpa_math", "sdpa_flash", "flex"]
ALL_MASKS = sorted(MASKS.names())


def check_kernel(kernel_name: str, mask_name: str, *, pass_: Pass, dtype="float32", heads=(4, 2), seqlen=200, **params):
    case = small_case(kernel_name, mask_name, seqlen=seqlen, dtype=dtype, pass_=pass_, heads=heads, **params)
    kernel = KERNELS.get(kernel_name)
    assert kernel.unsupported_reason(case) is None
    family = MASKS.get(mask_name)
    mask = build_mask(mask_name, seqlen, params, heads=heads[0] if family.dynamic else 1)
    tensors = make_tensors(case)
    inputs = tensors.for_pass(pass_.needs_grad)
    result = kernel.prepare(inputs, mask)()
    actual = {"out": result.out}
    if result.lse is not None:
        actual["lse"] = result.lse
    grad_out = None
    if pass_.needs_grad:
        grad_out = tensors.grad_out
        actual.update(zip(("dq", "dk", "dv"), torch.autograd.grad(result.out, (inputs.q, inputs.k, inputs.v), grad_out)))
    reference = reference_attention(tensors.q, tensors.k, tensors.v, mask, grad_out=grad_out, scale=inputs.scale)
    limits = tolerances("cpu", dtype, case.shape.head_dim)
    for name, err in compare_to_reference(actual, reference).items():
        assert not err.has_nan, (kernel_name, mask_name, name)
        assert err.rel_l2 <= limits[name], (kernel_name, mask_name, name, err.rel_l2, limits[name])
    return actual


@pytest.mark.parametrize("mask_name", ALL_MASKS)
@pytest.mark.parametrize("kernel_name", ["naive", "sdpa", "sdpa_math", "sdpa_flash"])
def test_eager_kernels_forward_and_backward_on_every_mask(kernel_name, mask_name):
    check_kernel(kernel_name, mask_name, pass_=Pass.forward_backward)


@pytest.mark.slow
@pytest.mark.parametrize("mask_name", ALL_MASKS)
def test_flex_forward_on_every_mask(mask_name):
    check_kernel("flex", mask_name, pass_=Pass.forward, seqlen=256)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kernel_name", ["naive", "sdpa", "sdpa_math"])
def test_half_precision_within_dtype_tolerance(kernel_name, dtype):
    check_kernel(kernel_name, "causal_document", pass_=Pass.forward_backward, dtype=dtype, seqlen=128)


@pytest.mark.parametrize("heads", [(4, 4), (4, 1), (6, 2)])
@pytest.mark.parametrize("kernel_name", ["naive", "sdpa", "sdpa_math"])
def test_gqa_and_mqa(kernel_name, heads):
    check_kernel(kernel_name, "sliding_window_causal", pass_=Pass.forward_backward, heads=heads, seqlen=96, window=16)


def test_naive_returns_lse_that_matches_reference():
    actual = check_kernel("naive", "share_question", pass_=Pass.forward)
    assert "lse" in actual


def test_support_declared_as_data_with_reasons():
    flex = KERNELS.get("flex")
    assert "no backward on CPU" in flex.unsupported_reason(small_case("flex", pass_=Pass.backward))
    assert flex.unsupported_reason(small_case("flex", pass_=Pass.forward)) is None
    for cuda_only in ("sdpa_efficient", "sdpa_cudnn"):
        kernel = KERNELS.get(cuda_only)
        assert not kernel.availability("cpu").ok
        assert "CUDA" in kernel.availability("cpu").reason
    cudnn_support = KERNELS.get("sdpa_cudnn").support["cuda"]
    case = small_case("sdpa_cudnn", "causal_document", dtype="bfloat16").model_copy(update={"device": "cuda"})
    assert "causal_document" in cudnn_support.reason_against(case)
    describe = KERNELS.get("sdpa_flash").describe("cpu")
    assert describe["available"] and set(describe["support"]) == {"cpu", "cuda"}


def test_sdpa_uses_is_causal_not_a_dense_mask_for_full_and_causal():
    from attnbench.kernels.builtin.sdpa import single_block_causality

    assert single_block_causality(build_mask("causal", 64)) is True
    assert single_block_causality(build_mask("full", 64)) is False
    for other in ("sliding_window_causal", "causal_document", "sliding_window"):
        assert single_block_causality(build_mask(other, 4096)) is None
