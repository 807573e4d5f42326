"""triton_slices in Triton's interpreter (CPU): every mask (13 static + 2 block-sparse),
forward and backward, fp32 and fp16, GQA/MQA, odd sizes and tiles, both backward variants,
head dims 64 and 128, against the float64 chunked reference with the harness tolerances.

Not collected by a plain ``pytest`` (the file name): ``tests/test_triton_slices.py`` runs it
in a subprocess with ``TRITON_INTERPRET=1``, which must be set before triton is imported.
The interpreter runs each program in Python (about a second per 256-token forward), so the
sizes are small.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from attnbench.cases import Pass
from attnbench.kernels import KERNELS
from attnbench.masks import MASKS, build_mask
from tests.helpers import small_case

SEQLEN = 250  # not a multiple of any tile: edge blocks everywhere
#: parameters scaled to 250 tokens (seeds chosen so the document masks have 4-5 documents)
SMALL = {
    "full": {},
    "causal": {},
    "sliding_window": {"window": 24},
    "sliding_window_causal": {"window": 24},
    "full_document": {"seed": 25},
    "causal_document": {"seed": 25},
    "share_question": {"seed": 25},
    "causal_blockwise": {"seed": 25},
    "prefix_lm_causal": {"prefix": 77},
    "prefix_lm_document": {"seed": 25},
    "global_sliding_window": {"global_tokens": 16, "window": 24},
    "block_causal_document": {"block": 24, "seed": 34},
    "causal_sink_window": {"sink": 4, "window": 24},
    "block_sparse": {"block": 32, "density": 0.4},
    "variable_block_sparse": {"avg_block": 160, "density": 0.5},
}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


needs_interpreter = pytest.mark.skipif(not _interpreting(), reason="run with TRITON_INTERPRET=1 (see test_triton_slices.py)")


def check_kernel(*args, **kwargs):
    from tests.test_kernels import check_kernel as check

    return check(*args, **kwargs)


@needs_interpreter
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_and_backward_fp32_every_mask(name):
    check_kernel("triton_slices", name, pass_=Pass.forward_backward, seqlen=SEQLEN, **SMALL[name])


@needs_interpreter
@pytest.mark.parametrize("name", ["causal_document", "sliding_window", "prefix_lm_document", "block_sparse"])
def test_forward_and_backward_fp16(name):
    check_kernel("triton_slices", name, pass_=Pass.forward_backward, dtype="float16", seqlen=SEQLEN, **SMALL[name])


@needs_interpreter
@pytest.mark.parametrize("heads", [(4, 4), (4, 1), (6, 2)])
@pytest.mark.parametrize("name", ["sliding_window_causal", "block_sparse"])
def test_gqa_and_mqa(name, heads):
    check_kernel("triton_slices", name, pass_=Pass.forward_backward, heads=heads, seqlen=130,
                 **({"window": 24} if name == "sliding_window_causal" else {"block": 32, "density": 0.5}))


@needs_interpreter
@pytest.mark.parametrize("name", ["causal_document", "variable_block_sparse"])
def test_deterministic_backward_variant(name):
    check_kernel("triton_slices_det", name, pass_=Pass.forward_backward, seqlen=SEQLEN, **SMALL[name])


def _run_ops(name, seqlen, heads, head_dim, config, dtype=torch.float32, seed=0):
    from attnbench.kernels.triton_slices.ops import make_plan, slice_attention
    from attnbench.measure.reference import reference_attention

    g = torch.Generator().manual_seed(seed)
    Hq, Hkv = heads
    mask = build_mask(name, seqlen, SMALL[name], heads=Hq if MASKS.get(name).dynamic else 1)
    q, k, v = (torch.randn(2, h, seqlen, head_dim, generator=g).to(dtype).requires_grad_() for h in (Hq, Hkv, Hkv))
    do = torch.randn(2, Hq, seqlen, head_dim, generator=g).to(dtype)
    scale = head_dim ** -0.5
    plan = make_plan(mask, Hq, "cpu", config)
    out, lse = slice_attention(q, k, v, plan, scale)
    grads = torch.autograd.grad(out, (q, k, v), do)
    ref = reference_attention(q, k, v, mask, grad_out=do, scale=scale)
    got = dict(zip(("out", "lse", "dq", "dk", "dv"), (out, lse, *grads)))
    for key, actual in got.items():
        expected = getattr(ref, key)
        err = ((actual.double() - expected).norm() / expected.norm()).item()
        assert err < (1e-5 if dtype == torch.float32 else 1e-2), (name, key, err)
    return got


@needs_interpreter
@pytest.mark.parametrize("name", ["global_sliding_window", "variable_block_sparse"])
def test_odd_tiles_batch_two_and_different_backward_tiles(name):
    from attnbench.kernels.triton_slices.ops import Config

    config = Config(block_m=16, block_n=32, bwd_block_m=32, bwd_block_n=16)
    _run_ops(name, 131, (4, 2), 16, config)


@needs_interpreter
@pytest.mark.parametrize("head_dim", [64, 128])
def test_head_dims_64_and_128(head_dim):
    from attnbench.kernels.triton_slices.ops import Config

    _run_ops("causal_sink_window", 80, (2, 1), head_dim, Config(32, 32, 32, 32))


@needs_interpreter
def test_deterministic_backward_is_bitwise_reproducible():
    from attnbench.kernels.triton_slices.ops import Config

    config = Config(32, 32, 32, 32, deterministic=True)
    a = _run_ops("causal_document", 96, (4, 2), 16, config)
    b = _run_ops("causal_document", 96, (4, 2), 16, config)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@needs_interpreter
def test_interpreter_is_declared_on_cpu():
    kernel = KERNELS.get("triton_slices")
    assert kernel.availability("cpu").ok  # TRITON_INTERPRET=1 here
    case = small_case("triton_slices", dtype="bfloat16")
    assert "bfloat16" in kernel.unsupported_reason(case)
    assert np.isin(["float32", "float16"], sorted(kernel.support["cpu"].dtypes)).all()
