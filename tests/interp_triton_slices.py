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


def _run_ops(name, seqlen, heads, head_dim, config, dtype=torch.float32, seed=0, batch=2):
    """Forward and backward of ``ops.slice_attention`` against the float64 reference; returns
    the tensors and the plan."""
    from attnbench.kernels.triton_slices.ops import make_plan, slice_attention
    from attnbench.measure.reference import reference_attention

    g = torch.Generator().manual_seed(seed)
    Hq, Hkv = heads
    mask = build_mask(name, seqlen, SMALL[name], heads=Hq if MASKS.get(name).dynamic else 1)
    q, k, v = (torch.randn(batch, h, seqlen, head_dim, generator=g).to(dtype).requires_grad_() for h in (Hq, Hkv, Hkv))
    do = torch.randn(batch, Hq, seqlen, head_dim, generator=g).to(dtype)
    scale = head_dim ** -0.5
    plan = make_plan(mask, Hq, Hkv, "cpu", config, batch=batch)
    out, lse = slice_attention(q, k, v, plan, scale)
    grads = torch.autograd.grad(out, (q, k, v), do)
    ref = reference_attention(q, k, v, mask, grad_out=do, scale=scale)
    got = dict(zip(("out", "lse", "dq", "dk", "dv"), (out, lse, *grads)))
    for key, actual in got.items():
        expected = getattr(ref, key)
        err = ((actual.double() - expected).norm() / expected.norm()).item()
        assert err < (1e-5 if dtype == torch.float32 else 1e-2), (name, key, err)
    return got, plan


@needs_interpreter
@pytest.mark.parametrize("name, tma", [("global_sliding_window", True), ("variable_block_sparse", False)])
def test_odd_tiles_batch_two_and_different_tiles_per_kernel(name, tma):
    from attnbench.kernels.triton_slices.configs import Config, Tiles

    config = Config(Tiles(16, 32), Tiles(32, 16), Tiles(16, 32), tma=tma, fp32_precision="ieee")
    _run_ops(name, 131, (4, 2), 16, config)


@needs_interpreter
@pytest.mark.parametrize("head_dim", [64, 128])
def test_head_dims_64_and_128(head_dim):
    from attnbench.kernels.triton_slices.configs import Config

    _run_ops("causal_sink_window", 80, (2, 1), head_dim, Config.uniform(32, 32))


@needs_interpreter
def test_deterministic_backward_is_bitwise_reproducible():
    from attnbench.kernels.triton_slices.configs import Config

    config = Config.uniform(32, 32, deterministic=True)
    a, _ = _run_ops("causal_document", 96, (4, 2), 16, config)
    b, _ = _run_ops("causal_document", 96, (4, 2), 16, config)
    for key in a:
        assert torch.equal(a[key], b[key]), key


GPU_TILE_MASKS = ["causal", "causal_document", "share_question", "causal_sink_window"]


@needs_interpreter
@pytest.mark.parametrize("name", GPU_TILE_MASKS)
def test_gpu_default_tiles_forward_and_backward(name):
    """The sm90 bf16 head-dim-128 defaults (forward 128 x 64, dk/dv 32 x 128 with heavy rows
    split, tensor descriptors), in fp16 (the interpreter mishandles bf16), at 320 tokens: edge
    blocks in every kernel."""
    from attnbench.kernels.triton_slices.configs import config_for

    config = config_for("sm90", 128, "bfloat16").with_(fp32_precision="ieee")
    assert (config.forward.block_m, config.forward.block_n, config.dkdv.block_m, config.dkdv.block_n) == (128, 64, 32, 128)
    _, plan = _run_ops(name, 320, (2, 1), 128, config, dtype=torch.float16, batch=1)
    if name == "causal_sink_window":
        assert len(plan.dkdv.programs.splits)  # the sink's key block is split across programs


@needs_interpreter
@pytest.mark.parametrize("arch, name", [("sm90", "causal_document"), ("sm80", "causal_sink_window")])
def test_gpu_default_tiles_deterministic_dq_and_even_lengths(arch, name):
    """The deterministic variant's own dq tile (128 x 64), at 384 tokens (every tile divides
    it: the unmasked fast path); sm80's configuration loads through pointers."""
    from attnbench.kernels.triton_slices.configs import config_for

    config = config_for(arch, 128, "float16", deterministic=True).with_(fp32_precision="ieee")
    assert config.tma == (arch != "sm80") and (config.dq.block_m, config.dq.block_n) == (128, 64)
    _run_ops(name, 384, (2, 1), 128, config, dtype=torch.float16, batch=1)


@needs_interpreter
def test_interpreter_is_declared_on_cpu():
    kernel = KERNELS.get("triton_slices")
    assert kernel.availability("cpu").ok  # TRITON_INTERPRET=1 here
    case = small_case("triton_slices", dtype="bfloat16")
    assert "bfloat16" in kernel.unsupported_reason(case)
    assert np.isin(["float32", "float16"], sorted(kernel.support["cpu"].dtypes)).all()


# -- addresses at 1M tokens ------------------------------------------------------------------
def _sparse(path, shape, dtype):
    """A tensor backed by a sparse file: untouched pages read as zeros and cost no memory."""
    n = int(np.prod(shape))
    with open(path, "wb") as f:
        f.truncate(n * torch.empty(0, dtype=dtype).element_size())
    return torch.from_file(str(path), shared=True, size=n, dtype=dtype).view(*shape)


@needs_interpreter
def test_addresses_at_1m_tokens_64_heads(tmp_path):
    """S = 1M, Hq = 64, Hkv = 8, D = 128: head x S x D is 2^33, far past int32. The tensors are
    sparse files (16 GiB each for q, o, do); only the programs of the last query block (forward)
    and of the last key block (dk/dv, and its share of the atomic dq) run, on the pointer path
    (sm80) where every address is the kernels' own arithmetic. Their outputs must equal a
    float64 reference of the last rows: a wrapped offset would read or write the wrong head."""
    from attnbench.kernels.triton_slices import ops
    from attnbench.kernels.triton_slices.configs import config_for

    S, Hq, Hkv, D, W = 2**20, 64, 8, 128, 127
    mask = build_mask("sliding_window_causal", S, {"window": W})  # the last 128 rows see keys [S - 255, S)
    config = config_for("sm80", D, "float16").with_(tma=False, fp32_precision="ieee", split=False)
    plan = ops.make_plan(mask, Hq, Hkv, "cpu", config)
    tiles_f, tiles_b = config.forward, config.dkdv
    last_q = S // tiles_f.block_m - 1
    plan.fwd = plan.fwd.select(plan.fwd.programs.prog[:, 1] == last_q)
    plan.dkdv = plan.dkdv.select(plan.dkdv.programs.prog[:, 1] == S // tiles_b.block_n - 1)
    assert (plan.fwd.count, plan.dkdv.count) == (1, 1)

    f16, f32 = torch.float16, torch.float32
    q, o, do = (_sparse(tmp_path / n, (1, Hq, S, D), f16) for n in ("q", "o", "do"))
    k, v, dk, dv = (_sparse(tmp_path / n, (1, Hkv, S, D), f16) for n in ("k", "v", "dk", "dv"))
    lse, delta = (_sparse(tmp_path / n, (1, Hq, S), f32) for n in ("lse", "delta"))
    dq = _sparse(tmp_path / "dq", (1, Hq, S, D), f32)
    g = torch.Generator().manual_seed(0)
    rows, keys = slice(S - 128, S), slice(S - 256, S)
    for t, span in ((q, rows), (do, rows), (k, keys), (v, keys)):
        t[:, :, span] = torch.randn(t[:, :, span].shape, generator=g).to(f16)
    scale = D ** -0.5

    ops.forward_launch(q, k, v, o, lse, plan, scale)()
    ops.delta_launch(o[:, :, rows], do[:, :, rows], delta[:, :, rows], None)()  # views: the full strides
    parts = torch.empty(1)
    ops.dkdv_launch(q, k, v, do, lse, delta, dk, dv, dq, parts, plan, scale)()

    # float64 reference of rows [S - 128, S) against keys [S - 256, S)
    i = torch.arange(S - 128, S)[:, None]
    j = torch.arange(S - 256, S)[None, :]
    allowed = (j <= i) & (j >= i - W)
    qr, dor = q[0, :, rows].double(), do[0, :, rows].double()
    kr, vr = (t[0, :, keys].double().repeat_interleave(Hq // Hkv, 0) for t in (k, v))
    s = (qr @ kr.transpose(1, 2) * scale).masked_fill(~allowed, float("-inf"))
    ref_lse = torch.logsumexp(s, -1)
    p = torch.exp(s - ref_lse[..., None])
    ref_o = p @ vr
    ds = p * (dor @ vr.transpose(1, 2) - (dor * ref_o).sum(-1, keepdim=True))
    last = slice(128, 256)  # the last key block, local
    ref_dq = ds[..., last] @ kr[:, last] * scale  # its share of dq
    ref_dk = (ds.transpose(1, 2) @ qr * scale)[:, last].reshape(Hkv, -1, 128, D).sum(1)
    ref_dv = (p.transpose(1, 2) @ dor)[:, last].reshape(Hkv, -1, 128, D).sum(1)

    def err(actual, expected):
        return ((actual.double() - expected).norm() / expected.norm()).item()

    assert err(o[0, :, rows], ref_o) < 1e-2
    assert err(lse[0, :, rows], ref_lse) < 1e-4
    assert err(dq[0, :, rows], ref_dq) < 1e-2
    assert err(dk[0, :, S - 128:], ref_dk) < 1e-2
    assert err(dv[0, :, S - 128:], ref_dv) < 1e-2
    # and nothing else was written: the files hold data only where rows were written
    head_rows = 128 * D
    for name, rows_written, size in (("o", Hq * head_rows, 2), ("dk", Hkv * head_rows * 2, 2), ("dq", Hq * head_rows * 2, 4)):
        assert os.stat(tmp_path / name).st_blocks * 512 <= 2 * rows_written * size + 2**16, name
