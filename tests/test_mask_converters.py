"""Converters: every rendering of a mask (rows, block counts, mask_mod, BlockMask, varlen)
is the same allowed set as dense(mask); plus large-S behaviour and one real FlexAttention run."""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.errors import MaskTooLarge, UserError
from attnbench.masks import MASKS, build_mask
from attnbench.masks.convert import (
    VarlenForm,
    block_counts,
    dense,
    dense_rows,
    mask_mod,
    render_varlen,
    segment_grid,
    to_block_mask,
)

NAMES = MASKS.names()
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WITH_VARLEN = {"full", "causal", "sliding_window", "sliding_window_causal", "full_document", "causal_document"}

seqlens = st.one_of(st.integers(1, 600), st.sampled_from([128, 256, 384, 512, 640, 768, 896, 1024]))


@st.composite
def masks(draw, name):
    S = draw(seqlens)
    fam = MASKS.get(name)
    params = {"seed": draw(st.integers(0, 2**32))} if "seed" in fam.params else {}
    if "window" in fam.params:
        params["window"] = draw(st.integers(0, 1300))
    if "global_tokens" in fam.params:
        params["global_tokens"] = draw(st.integers(0, 700))
    if "sink" in fam.params:
        params["sink"] = draw(st.integers(0, 700))
    if "block" in fam.params:
        params["block"] = draw(st.one_of(st.integers(16, 300), st.sampled_from([64, 128])))
    if "avg_block" in fam.params:
        params["avg_block"] = draw(st.integers(1, 600))
    if "density" in fam.params:
        params["density"] = draw(st.integers(1, 100)) / 100
    if "prefix" in fam.params and draw(st.booleans()):
        params["prefix"] = draw(st.integers(1, S))
    return fam.build(S, params, heads=draw(st.integers(1, 3)))


def block_sums(d: np.ndarray, bq: int, bk: int) -> np.ndarray:
    H, S, _ = d.shape
    nqb, nkb = -(-S // bq), -(-S // bk)
    pad = np.zeros((H, nqb * bq, nkb * bk), np.int64)
    pad[:, :S, :S] = d
    return pad.reshape(H, nqb, bq, nkb, bk).sum(axis=(2, 4))


def eval_mask_mod(mask, mod=None) -> torch.Tensor:
    """mask_mod evaluated on broadcast index grids: [H, S, S]."""
    mod = mod or mask_mod(mask)
    S = mask.seqlen
    h = torch.arange(mask.heads, dtype=torch.int32)[:, None, None]
    q = torch.arange(S, dtype=torch.int32)[None, :, None]
    k = torch.arange(S, dtype=torch.int32)[None, None, :]
    out = mod(torch.zeros((), dtype=torch.int32), h, q, k)
    return out.expand(mask.heads, S, S)


# -- one property per converter, for every mask ------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_converters_agree(name, data):
    mask = data.draw(masks(name))
    S, H = mask.seqlen, mask.heads
    d = dense(mask)
    assert d.shape == (H, S, S) and d.dtype == torch.bool
    assert int(d.sum()) == mask.area_total
    dn = d.numpy()

    # dense_rows over random chunks
    for _ in range(3):
        a = data.draw(st.integers(0, S - 1))
        b = data.draw(st.integers(a + 1, S))
        rows = dense_rows(mask, a, b)
        assert rows.shape == (H, b - a, S)
        assert torch.equal(rows, d[:, a:b])

    # block counts, for random (also unequal) block sizes
    bq = data.draw(st.sampled_from([1, 7, 16, 64, 128, 300]))
    bk = data.draw(st.sampled_from([5, 16, 64, 128, 1024]))
    counts = block_counts(mask, bq, bk)
    np.testing.assert_array_equal(counts, block_sums(dn, bq, bk))

    # mask_mod on index grids
    assert torch.equal(eval_mask_mod(mask), d)

    # varlen form where one exists
    if name in WITH_VARLEN:
        assert isinstance(mask.varlen, VarlenForm)
        assert torch.equal(render_varlen(mask.varlen, S)[None], d)
    else:
        assert mask.varlen is None


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, **SETTINGS)
@given(data=st.data())
def test_block_mask_agrees(name, data):
    mask = data.draw(masks(name))
    S, H = mask.seqlen, mask.heads
    bs = data.draw(st.sampled_from([16, 64, 128]))
    counts = block_sums(dense(mask).numpy(), bs, bs)
    nqb, nkb = counts.shape[1:]
    rq = np.diff(np.minimum(np.arange(nqb + 1) * bs, S))
    ck = np.diff(np.minimum(np.arange(nkb + 1) * bs, S))
    cells = rq[:, None] * ck[None, :]
    bm = to_block_mask(mask, bs)
    assert bm.kv_num_blocks.shape == (1, H, nqb) and bm.kv_indices.shape == (1, H, nqb, nkb)
    assert bm.full_kv_num_blocks.shape == (1, H, nqb) and bm.full_kv_indices.shape == (1, H, nqb, nkb)
    for num, idx, want in ((bm.kv_num_blocks, bm.kv_indices, (counts > 0) & (counts < cells)),
                           (bm.full_kv_num_blocks, bm.full_kv_indices, counts == cells)):
        num, idx = num[0].numpy(), idx[0].numpy()
        np.testing.assert_array_equal(num, want.sum(-1))
        for h in range(H):
            for q in range(nqb):
                np.testing.assert_array_equal(np.sort(idx[h, q, : num[h, q]]), np.nonzero(want[h, q])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        marked = bm.to_dense()[0].numpy()
    np.testing.assert_array_equal(marked.astype(bool), counts > 0)


# -- specific behaviours -------------------------------------------------------------------
def test_dense_refuses_politely():
    mask = build_mask("causal", 1 << 16)
    with pytest.raises(MaskTooLarge) as e:
        dense(mask)
    msg = str(e.value)
    assert "\n" not in msg and "65536 x 65536" in msg and "67,108,864" in msg
    assert isinstance(e.value, UserError)
    with pytest.raises(MaskTooLarge):
        dense(build_mask("causal", 100), max_elements=9999)
    assert dense(build_mask("causal", 100), max_elements=10000).sum() == 5050


def test_dense_rows_at_1m():
    S = 1 << 20
    mask = build_mask("causal_document", S)
    a, b = 500_000, 500_064
    rows = dense_rows(mask, a, b).numpy()[0]
    starts = mask.doc_starts
    i = np.arange(a, b)[:, None]
    j = np.arange(S)[None, :]
    di = np.searchsorted(starts, i, side="right") - 1
    want = (j >= starts[di]) & (j <= i)
    np.testing.assert_array_equal(rows, want)
    sw = build_mask("sliding_window", S)
    rows = dense_rows(sw, S - 10, S + 5)  # clipped to S
    assert rows.shape == (1, 10, S) and int(rows.sum()) == sum(min(1024, S - 1 - i) + 1025 for i in range(S - 10, S))


def test_block_counts_large_touch_only_the_band():
    S = 1 << 20
    for name in ("sliding_window", "causal_sink_window", "global_sliding_window", "causal_document"):
        mask = build_mask(name, S)
        tracemalloc.start()
        t0 = time.perf_counter()
        counts = block_counts(mask, 128, 128)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"block_counts {name} at 1M: {seconds:.2f} s, peak {peak / 2**20:.1f} MiB")
        assert int(counts.sum()) == mask.area_total
        # the cost guard is memory, not time: the block grid is 8192^2 int64 = 512 MiB (2.45x at peak: temporaries); a dense
        # evaluation would need 2^40 entries, a per-block python loop is caught by the test budget
        assert peak < 3 * counts.nbytes + (64 << 20), peak
    # block of a sliding window: the diagonal blocks are full, the first off-band ones partial
    c = block_counts(build_mask("sliding_window", 4096, {"window": 128}), 128, 128)[0]
    assert c[5, 5] == 128 * 128 and c[5, 6] == c[5, 4] == 128 * 129 // 2
    assert c[5, 7] == c[5, 3] == 0


def test_segment_grid_small():
    m = build_mask("prefix_lm_causal", 100, {"prefix": 30})
    qb, kb, q_seg, k_seg, lo, hi = segment_grid(m)
    assert list(qb) == [0, 30, 100] and list(kb) == [0, 30, 100]
    assert lo.shape == (1, 3, 3) and q_seg[100] == 2 and k_seg[100] == 2
    assert lo[0, 2, 2] > hi[0, 2, 2]  # padding cell is empty
    assert lo[0, 1, 1] < -100 and hi[0, 1, 1] == 0  # causal part: kv - q <= 0


def test_mask_mod_out_of_range_and_vmap_and_compile():
    mask = build_mask("block_sparse", 300, {"block": 64}, heads=2)
    mod = mask_mod(mask)
    d = dense(mask)
    # padded indices (>= S) are masked out instead of failing
    assert not bool(mod(torch.tensor(0), torch.tensor(1), torch.tensor(300), torch.tensor(5)))
    assert not bool(mod(torch.tensor(0), torch.tensor(1), torch.tensor(5), torch.tensor(383)))
    # vmap, as FlexAttention uses it
    from torch.func import vmap

    q = torch.arange(300)
    k = torch.arange(300)
    f = vmap(vmap(vmap(mod, in_dims=(None, None, None, 0)), in_dims=(None, None, 0, None)), in_dims=(None, 0, None, None))
    assert torch.equal(f(torch.tensor(0), torch.arange(2), q, k), d)
    # torch.compile traces it in one graph (no graph breaks)
    static = build_mask("share_question", 300)
    compiled = torch.compile(lambda *a: eval_mask_mod(static, mask_mod(static)), backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(), dense(static))
    torch._dynamo.reset()


def test_varlen_forms():
    sw = build_mask("sliding_window_causal", 100, {"window": 5}).varlen
    assert sw.causal and sw.window_size == (5, 0) and list(sw.cu_seqlens) == [0, 100]
    c = build_mask("causal", 10).varlen
    assert c.causal and c.window_size == (-1, 0)
    f = build_mask("full", 10).varlen
    assert not f.causal and f.window_size == (-1, -1)
    doc = build_mask("causal_document", 5000)
    assert np.array_equal(doc.varlen.cu_seqlens, doc.doc_starts) and doc.varlen.max_seqlen == np.diff(doc.doc_starts).max()


# -- one real FlexAttention run -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,params,heads", [
    ("causal_document", {"seed": 3}, 1),
    ("sliding_window", {"window": 40}, 1),
    ("prefix_lm_document", {}, 1),
    ("block_sparse", {"block": 32, "density": 0.4}, 2),
    ("variable_block_sparse", {"avg_block": 100, "density": 0.5}, 2),
])
def test_flex_attention_matches_dense_softmax(name, params, heads):
    from torch.nn.attention.flex_attention import flex_attention

    S, D, H = 256, 16, 2
    mask = build_mask(name, S, params, heads=heads)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, H, S, D, dtype=torch.float32) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_attention(q, k, v, block_mask=to_block_mask(mask, 64))
    allowed = dense(mask)[None].expand(1, H, S, S)
    scores = (q @ k.transpose(-1, -2)) / D**0.5
    ref = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
