"""Context-parallel methods: correctness against the distributed reference at world sizes
1, 2, 4 and 8 (gloo; every static mask at W = 4), bytes kept for backward (flat in W), load
balance from slices, and counted communication against the analytic expectation.

Spawning a gloo group costs seconds on this machine, so each world size runs all its cases
in one group (module-scoped cache) and several tests read the outcomes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnbench.cases import Budget, Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp import CP_METHODS
from attnbench.cp.dispatch import contiguous, documents, imbalance, make_layout, rank_area, zigzag
from attnbench.cp.local import LocalStep, Partial
from attnbench.cp.slices import LocalMask, local_mask
from attnbench.kernels import KERNELS
from attnbench.masks import MASKS, build_mask
from attnbench.masks.convert import dense

from tests.cp_harness import run_cases

S = 512
BUDGET = Budget(warmup_seconds=0.0, measure_seconds=0.001, min_repeats=1, max_repeats=1, case_seconds=60)
STATIC = sorted(n for n in MASKS.names() if not MASKS.get(n).dynamic)
#: small-S parameters: seed 3 draws 3 documents at S=512; windows and blocks below S
SMALL_PARAMS = {
    "window": 40, "block": 16, "global_tokens": 16, "sink": 4, "seed": 3,
}
ISSUE_MASKS = ["full", "causal", "causal_document", "sliding_window_causal", "share_question", "block_causal_document"]
METHODS = ["ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"]
RINGS = ["ring_p2p", "usp", "loongtrain"]
TOKENS_PER_RANK = 64  # the weak-scaling cases of the saved-bytes test


def mask_params(name: str) -> dict:
    return {k: v for k, v in SMALL_PARAMS.items() if k in MASKS.get(name).params}


def cp_case(method: str, mask: str, world: int, pass_: Pass = Pass.forward_backward, *, heads=(4, 2),
            seqlen: int = S, check_rows: int | None = None, **params) -> Case:
    return Case(
        kernel="naive", mask=MaskChoice(name=mask, params=mask_params(mask)),
        shape=Shape(batch=1, heads_q=heads[0], heads_kv=heads[1], head_dim=16, seqlen=seqlen),
        dtype="float32", pass_=pass_, budget=BUDGET,
        cp=CPSpec(method=method, world_size=world, params=params, check_rows=check_rows),
    )


def weak(method: str, world: int) -> Case:
    return cp_case(method, "causal", world, seqlen=TOKENS_PER_RANK * world)


def cases_for(world: int) -> list[Case]:
    masks = STATIC if world == 4 else ISSUE_MASKS
    heads = (8, 2) if world == 8 else (4, 2)  # Ulysses needs W | heads_q
    cases = [cp_case(m, mask, world, heads=heads) for m in METHODS for mask in masks]
    if world in (2, 4, 8):
        cases += [weak(m, world) for m in RINGS]
    if world == 1:
        cases += [cp_case("torch_cp", "causal", world), cp_case("ring_p2p", "causal", world, Pass.forward)]
    if world == 4:
        cases += [cp_case("ring_p2p", "causal", world, Pass.forward),
                  cp_case("ring_p2p", "causal_document", world, Pass.backward),
                  cp_case("ulysses", "causal", world, Pass.backward, heads=(4, 4)),
                  cp_case("ring_p2p", "causal", world, dispatch="contiguous")]
        # the double ring proper (2 windows of 2), USP at both extremes, a sampled check
        cases += [cp_case("loongtrain", mask, world, ulysses_degree=1, window=2) for mask in ("causal", "causal_document")]
        cases += [cp_case("usp", "causal", world, ulysses_degree=d) for d in (1, 4)]
        cases += [cp_case("ring_p2p", "causal_document", world, check_rows=8)]
    if world == 8:  # the default double ring at W = 8 (u = 1: 2 windows of 4)
        cases += [cp_case("loongtrain", mask, world, ulysses_degree=1) for mask in ("causal", "share_question")]
    return cases


def timed(case: Case) -> bool:
    """Whether the case runs its timing and memory steps too (the metrics tests read them):
    causal at W <= 2, the issue's masks at W = 4; the rest is a correctness sweep."""
    world = case.cp.world_size
    main = not case.cp.params and case.shape.seqlen == S and case.pass_ is Pass.forward_backward
    return main and (case.mask.name in ISSUE_MASKS if world == 4 else world <= 2 and case.mask.name == "causal")


_OUTCOMES: dict[int, list] = {}


def outcomes(world: int) -> list[tuple[Case, dict]]:
    if world not in _OUTCOMES:
        cases = cases_for(world)
        _OUTCOMES[world] = list(zip(cases, run_cases(cases, world, [timed(c) for c in cases])))
    return _OUTCOMES[world]


def label(case: Case) -> str:
    return f"{case.cp.method}{dict(case.cp.params)} {case.mask.name} S={case.shape.seqlen} {case.pass_.value}"


# -- correctness against the reference -----------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_every_method_matches_the_reference(world):
    checked = set()
    for case, out in outcomes(world):
        if case.cp.method == "torch_cp":
            continue
        assert out["status"] == "ok", (label(case), out.get("reason"), out.get("detail"))
        accuracy = out["accuracy"]
        tensors = accuracy["tensors"]
        expected = {"out", "lse"} | ({"dq", "dk", "dv"} if case.pass_.needs_grad else set())
        assert set(tensors) == expected, label(case)
        for name, t in tensors.items():
            assert t["ok"] and t["rel_l2"] is not None and t["rel_l2"] <= t["tolerance"], (label(case), name, t)
            assert t["rel_l2"] < 1e-5, (label(case), name, t)  # float32 math: far inside tolerance
        assert "distributed" in accuracy["reference"]
        rows = case.cp.check_rows
        assert accuracy["coverage"]["mode"] == ("full" if rows is None else "sampled"), label(case)
        assert accuracy["coverage"]["query_rows"] == (case.shape.seqlen if rows is None else rows * world)
        checked.add((case.cp.method, case.mask.name))
    for method in METHODS:
        for mask in STATIC if world == 4 else ISSUE_MASKS:
            assert (method, mask) in checked, (method, mask)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_metrics_per_case(world):
    measured = [(case, out) for case, out in outcomes(world) if timed(case) and case.cp.method in METHODS]
    assert {c.cp.method for c, _ in measured} == set(METHODS) and len(measured) >= 5 * (len(ISSUE_MASKS) if world == 4 else 1)
    for case, out in measured:
        cp = out["cp"]
        assert cp["world_size"] == world and cp["backend"] == "gloo"
        assert len(cp["rank_median_s"]) == world and len(cp["rank_area"]) == world
        assert len(cp["rank_peak_bytes"]) == world and len(cp["rank_saved_bytes"]) == world
        assert out["timing"]["median_s"] > 0 and out["timing"]["median_s"] >= max(cp["rank_median_s"]) * 0.999 - 1e-12 \
            or out["timing"]["repeats"] <= 2
        assert cp["imbalance"] >= 1.0 and cp["area_imbalance"] >= 1.0
        mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params)
        assert sum(cp["rank_area"]) == pytest.approx(mask.area, abs=world)
        assert out["flops"] == pytest.approx(4 * case.shape.heads_q * case.shape.head_dim * mask.area * case.pass_.flop_factor)
        assert cp["per_gpu_tflops"] == pytest.approx(out["flops"] / (out["timing"]["median_s"] * world) / 1e12)
        overlap = cp["overlap"]
        assert overlap["compute_s"] > 0 and overlap["communication_s"] > 0
        assert overlap["exposed_s"] == pytest.approx(out["timing"]["median_s"] - overlap["compute_s"])
        if world == 1:
            assert overlap["efficiency"] is None  # nothing sent, nothing to hide
        else:
            assert 0.0 <= overlap["efficiency"] <= 1.0
        plan = cp["plan"]
        method = CP_METHODS.get(case.cp.method)
        assert plan["rings"] == list(method.ring_sizes(case)) and plan["ulysses_degree"] >= 1


@pytest.mark.parametrize("world", [2, 4, 8])
def test_counted_bytes_equal_the_analytic_expectation(world):
    seen = set()
    for case, out in outcomes(world):
        cp = out["cp"]
        passes = ["forward", "backward"] if case.pass_.needs_grad else ["forward"]
        assert sorted(cp["comm"]) == sorted(passes) == sorted(cp["comm_expected"]), label(case)
        for p in passes:
            expected = cp["comm_expected"][p]
            for rank, counted in enumerate(cp["comm"][p]):
                assert counted == expected, (label(case), p, rank, counted, expected)
        seen.add(case.cp.method)
        if case.cp.method in ("ulysses", "ring_p2p", "ring_allgather"):
            assert cp["comm_expected"]["forward"]["bytes_sent"] > 0
    assert set(METHODS) <= seen


def test_bytes_kept_for_backward_are_flat_in_the_world_size():
    """Fixed tokens per rank: the rings keep q, k, v, out, lse (never a received chunk or a
    step's partial), so the bytes autograd saves per rank do not grow with W."""
    local = TOKENS_PER_RANK
    B, Hq, Hkv, D, e = 1, 4, 2, 16, 4
    own = B * (2 * Hq + 2 * Hkv) * local * D * e + B * Hq * local * 4  # q, out, k, v, lse (float32)
    for method in RINGS:
        saved = {}
        for world in (2, 4, 8):
            [out] = [o for c, o in outcomes(world)
                     if c.cp.method == method and c.mask.name == "causal" and not c.cp.params and c.shape.heads_q == 4
                     and c.shape.seqlen == local * world and c.pass_ is Pass.forward_backward]
            saved[world] = out["cp"]["rank_saved_bytes"]
        flat = [b for w in saved for b in saved[w]]
        assert max(flat) <= 1.1 * min(flat), (method, saved)
        assert max(flat) <= 1.1 * own, (method, saved, own)
        if method == "ring_p2p":  # exactly its own q, k, v, out, lse
            assert set(flat) == {own}, saved


def test_analytic_formulas_by_hand():
    e, f32 = 4, 4  # float32 inputs; float32 accumulators
    B, Hq, Hkv, D, W = 1, 4, 2, 16, 4
    chunk = 2 * B * Hkv * (S // W) * D
    ring = CP_METHODS.get("ring_p2p").expected_comm(cp_case("ring_p2p", "causal", W))
    assert ring["forward"] == ((W - 1) * chunk * e, W - 1)
    assert ring["backward"] == ((W - 1) * chunk * e + W * chunk * f32, (W - 1) + W)  # K/V again + dK/dV
    gather = CP_METHODS.get("ring_allgather").expected_comm(cp_case("ring_allgather", "causal", W))
    assert gather["forward"] == gather["backward"] == ((W - 1) * chunk * e, 1)
    uly = CP_METHODS.get("ulysses").expected_comm(cp_case("ulysses", "causal", W))
    rep = 2  # 2 KV heads repeated to 4 for 4 ranks
    per = B * (S // W) * D * e
    assert uly["forward"] == (per * (Hq + 2 * Hkv * rep) * (W - 1) // W + per * Hq * (W - 1) // W, 2)
    assert "backward" not in CP_METHODS.get("ulysses").expected_comm(cp_case("ulysses", "causal", W, Pass.forward))
    # the double ring: 2 windows of 2; K/V: outer 1 + inner 2 x 1 = 3; accumulators: outer 2 + inner 2 x 2 = 6
    loong = CP_METHODS.get("loongtrain").expected_comm(cp_case("loongtrain", "causal", W, ulysses_degree=1, window=2))
    assert loong["forward"] == (3 * chunk * e, 3) and loong["backward"] == (3 * chunk * e + 6 * chunk * f32, 9)


# -- support --------------------------------------------------------------------------------
def test_torch_cp_is_unavailable_on_cpu_with_the_reason():
    method = CP_METHODS.get("torch_cp")
    assert method.unsupported_reason(cp_case("torch_cp", "causal", 2)) == "PyTorch context_parallel needs CUDA"
    assert method.describe("cpu")["available"] is False
    [(case, out)] = [(c, o) for c, o in outcomes(1) if c.cp.method == "torch_cp"]
    assert out["status"] == "unsupported" and out["reason"] == "PyTorch context_parallel needs CUDA"


def test_shape_rules_give_reasons():
    ulysses = CP_METHODS.get("ulysses")
    assert "heads_q 3 is not divisible" in ulysses.unsupported_reason(cp_case("ulysses", "causal", 2, heads=(3, 1)))
    assert ulysses.unsupported_reason(cp_case("ulysses", "causal", 4, heads=(4, 1))) is None  # KV heads repeated
    usp = CP_METHODS.get("usp")
    assert "does not divide" in usp.unsupported_reason(cp_case("usp", "causal", 4, ulysses_degree=3))
    loong = CP_METHODS.get("loongtrain")
    assert "window 3" in loong.unsupported_reason(cp_case("loongtrain", "causal", 4, ulysses_degree=1, window=3))
    assert "unknown parameter" in CP_METHODS.get("ring_p2p").unsupported_reason(cp_case("ring_p2p", "causal", 2, bogus=1))
    flex_cpu = cp_case("ring_p2p", "causal", 2).model_copy(update={"kernel": "flex"})
    assert "no CP local step" in CP_METHODS.get("ring_p2p").unsupported_reason(flex_cpu)
    assert "dynamic" in CP_METHODS.get("ring_p2p").unsupported_reason(
        cp_case("ring_p2p", "causal", 2).model_copy(update={"mask": MaskChoice(name="block_sparse")}))
    assert "not divisible by 8" in CP_METHODS.get("ring_p2p").unsupported_reason(
        cp_case("ring_p2p", "causal", 4, seqlen=36, dispatch="zigzag"))
    assert "integer" in usp.unsupported_reason(cp_case("usp", "causal", 4, ulysses_degree="two"))
    for name, method in CP_METHODS.items():
        assert method.describe("cpu")["name"] == name


def test_defaults_make_each_method_itself():
    usp, loong, torch_cp = CP_METHODS.get("usp"), CP_METHODS.get("loongtrain"), CP_METHODS.get("torch_cp")

    def paper(method, W, per_node=None, heads=(64, 8), mask="causal", **params):
        case = cp_case(method, mask, W, heads=heads, seqlen=8192 * W, **params)
        return case.model_copy(update={"cp": case.cp.model_copy(update={"ranks_per_node": per_node})})

    # the Ulysses degree: within one node, and no more than the KV heads
    assert [usp.degree(paper("usp", W, 8)) for W in (8, 16, 32, 64, 96)] == [4, 8, 8, 8, 8]
    assert usp.degree(paper("usp", 64, 4)) == 4 and usp.degree(paper("usp", 8, heads=(64, 2))) == 2
    assert usp.degree(paper("usp", 8, heads=(64, 1))) == 1  # MQA: a plain ring, no repeated KV
    # loongtrain: always two windows or more, a double ring where the ring has 4 positions or more
    for W in (8, 16, 32, 64, 96):
        nw, w = loong.ring_sizes(paper("loongtrain", W, 8))
        assert nw >= 2 and nw * w == W // loong.degree(paper("loongtrain", W, 8))
    assert loong.ring_sizes(paper("loongtrain", 64, 8)) == (2, 4)
    assert loong.ring_sizes(cp_case("loongtrain", "causal", 8, ulysses_degree=1)) == (2, 4)
    # torch_cp: GQA runs (K/V repeated), full without load balancing, the rotation a parameter
    gqa = paper("torch_cp", 8, mask="full").model_copy(update={"device": "cuda"})
    assert torch_cp.support["cuda"].reason_against(gqa) is None
    full = torch_cp.plan(gqa, build_mask("full", gqa.shape.seqlen))
    assert full.layout.strategy == "contiguous" and full.describe()["load_balance"] is False
    causal = paper("torch_cp", 8).model_copy(update={"device": "cuda"})
    assert torch_cp.plan(causal, build_mask("causal", causal.shape.seqlen)).layout.strategy == "torch_head_tail"
    alltoall = paper("torch_cp", 8, rotate="alltoall")
    assert torch_cp.expected_comm(alltoall)["forward"][1] == 7 and torch_cp.expected_comm(causal)["forward"][1] == 1
    assert "rotate 'ring'" in torch_cp.check(paper("torch_cp", 8, rotate="ring"))
    assert not torch_cp.counts_comm and not torch_cp.separable


# -- balance (slices only: no processes, no timing) -----------------------------------------
@pytest.mark.parametrize("seqlen", [65536, 131072])
@pytest.mark.parametrize("mask_name", ["causal", "causal_document"])
def test_balanced_dispatch_keeps_area_imbalance_within_5_percent(mask_name, seqlen):
    W = 8
    mask = build_mask(mask_name, seqlen)  # default document sampling
    balanced = zigzag(seqlen, W) if mask.doc_starts is None else documents(seqlen, W, mask.doc_starts)
    balanced.check()
    areas = rank_area(mask, balanced)
    assert sum(areas) == mask.area_total
    assert imbalance(areas) <= 1.05, (balanced.strategy, areas)
    # what ring_p2p actually uses (auto) is at least as good, and the naive split is not
    plan = CP_METHODS.get("ring_p2p").plan(cp_case("ring_p2p", mask_name, W, seqlen=seqlen), mask)
    assert imbalance(plan.rank_area(mask)) <= imbalance(areas) + 1e-12
    assert imbalance(rank_area(mask, contiguous(seqlen, W))) > 1.5


def test_usp_rank_area_shares_the_group_work():
    mask = build_mask("causal", 1024)
    plan = CP_METHODS.get("usp").plan(cp_case("usp", "causal", 8, seqlen=1024, heads=(8, 8), ulysses_degree=2), mask)
    assert plan.ulysses == 2 and plan.ring.world == 4 and plan.layout.world == 8
    plan.layout.check()
    assert sum(plan.rank_area(mask)) == mask.area_total and imbalance(plan.rank_area(mask)) <= 1.01


# -- the generic slice machinery and the local step ------------------------------------------
@pytest.mark.parametrize("world", [2, 4])
def test_local_slices_equal_the_dense_mask_for_every_static_mask(world):
    for name in STATIC:
        mask = build_mask(name, 256, mask_params(name))
        full = dense(mask)[0]
        for strategy in ("contiguous", "zigzag", "documents"):
            try:
                layout = make_layout(mask, world, strategy)
            except Exception:
                assert strategy == "documents" and mask.doc_starts is None
                continue
            layout.check()
            for r in range(world):
                rows = torch.from_numpy(layout.positions(r))
                for s in range(world):
                    cols = torch.from_numpy(layout.positions(s))
                    local = local_mask(mask.slices, layout.runs[r], layout.runs[s])
                    expected = full[rows][:, cols]
                    assert torch.equal(local.dense(), expected), (name, strategy, r, s)
                    assert local.area == int(expected.sum())


def test_ring_steps_merged_by_lse_and_their_backward_equal_one_step():
    """The ring's arithmetic on one process: steps in any order merged by Partial (forward),
    each step's LocalStep.backward from the merged lse (naive's own backward step, and the
    generic recompute-under-autograd fallback) summed, against one step over all keys."""
    from attnbench.kernels.base import Kernel

    torch.manual_seed(0)
    naive = KERNELS.get("naive")
    mask = build_mask("causal_document", 128, {"seed": 3})
    all_runs = np.array([[0, 128]])
    halves = [np.array([[64, 128]]), np.array([[0, 64]])]  # second half first; rows < 64 see nothing in it
    q, k, v, go = (torch.randn(1, h, 128, 8, dtype=torch.float32) for h in (4, 2, 2, 4))
    whole = local_mask(mask.slices, all_runs, all_runs)
    qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = LocalStep(naive, 0.3).attend(qq, kk, vv, whole)
    ref = torch.autograd.grad(ref_out, (qq, kk, vv), go)

    acc = Partial()
    for part in halves:
        a, b = part[0]
        acc.add(*LocalStep(naive, 0.3).forward(q, k[:, :, a:b], v[:, :, a:b], local_mask(mask.slices, all_runs, part)))
    out, lse = acc.result(q)
    assert torch.isfinite(lse).all()
    tight = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref_out.detach(), **tight)
    torch.testing.assert_close(lse, ref_lse, **tight)

    class Fallback(Kernel):  # naive's forward, the generic backward step
        name = "fallback"
        attend_slices = naive.attend_slices

    assert naive.has_slice_backward and not Fallback.has_slice_backward
    for kernel in (naive, Fallback()):
        dq = torch.zeros_like(q)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        for part in halves:
            a, b = part[0]
            g = LocalStep(kernel, 0.3).backward(q, k[:, :, a:b], v[:, :, a:b], out, lse, go, local_mask(mask.slices, all_runs, part))
            dq += g[0]
            dk[:, :, a:b] += g[1]
            dv[:, :, a:b] += g[2]
        for mine, theirs in zip((dq, dk, dv), ref):
            torch.testing.assert_close(mine, theirs, **tight)


def test_an_empty_step_calls_no_kernel_and_gives_zero_gradients():
    class Boom:
        def attend_slices(self, *args):
            raise AssertionError("kernel called for an empty step")

        attend_slices_backward = attend_slices

    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    k = torch.randn(1, 2, 8, 4, requires_grad=True)
    empty = LocalMask(local_mask(build_mask("causal", 16).slices, [[0, 8]], [[8, 16]]).slices, 8, 8)
    assert empty.empty
    step = LocalStep(Boom(), 1.0)
    out, lse = step.attend(q, k, k, empty)
    assert (out == 0).all() and torch.isneginf(lse).all()
    gq, gk = torch.autograd.grad(out.sum(), (q, k))
    assert (gq == 0).all() and (gk == 0).all()
    assert step.forward(q, k, k, empty) is None and step.backward(q, k, k, out, lse, out, empty) is None
    full = local_mask(build_mask("full", 16).slices, [[0, 8]], [[8, 16]])
    step.switches.compute = False  # communication-only timing: the kernel is never called
    assert step.forward(q, k, k, full) is None and step.backward(q, k, k, out, lse, out, full) is None
    assert (step.attend(q, k, k, full)[0] == 0).all()


@pytest.fixture()
def one_rank_group():
    """A gloo group of this process alone (the check's reductions are collectives)."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_distributed_check_is_the_reference_and_catches_a_wrong_row(one_rank_group, monkeypatch):
    from attnbench.cp import check
    from attnbench.inputs import make_tensors
    from attnbench.measure.reference import reference_attention

    monkeypatch.setattr(check, "CHUNK_SCORE_BYTES", 4 * 256 * 8 * 7)  # 7 rows per chunk: many chunks
    case = cp_case("ring_p2p", "causal_document", 1, seqlen=256)
    mask = build_mask("causal_document", 256, case.mask.params)
    t = make_tensors(case)
    layout, scale = contiguous(256, 1), 0.25
    ref = reference_attention(t.q, t.k, t.v, mask, grad_out=t.grad_out, scale=scale)
    actual = {name: getattr(ref, name).float() for name in ("out", "lse", "dq", "dk", "dv")}
    shards = check.Shards(q=t.q, k=t.k, v=t.v, grad_out=t.grad_out, actual=actual)
    rows = check.sample_rows(256, None, case.seed, 0)
    streamed = check.reference_of_rows(mask, layout, 0, rows, shards, scale, True)
    for name in actual:
        torch.testing.assert_close(streamed[name], getattr(ref, name), rtol=1e-10, atol=1e-10)
    sums = check.reduce_errors(check.local_errors(streamed, shards, rows), "cpu")
    assert all(e.finish().rel_l2 < 1e-6 for e in sums.values())
    actual["out"][:, :, 100] += 1.0  # one wrong row
    sums = check.reduce_errors(check.local_errors(streamed, shards, rows), "cpu")
    assert sums["out"].finish().rel_l2 > 1e-2 and sums["dk"].finish().rel_l2 < 1e-6

    # sampled: the loss sees only the checked rows; dq (zero elsewhere), dk, dv still exact
    rows = check.sample_rows(256, 16, case.seed, 0)
    assert len(rows) == 16 and np.array_equal(rows, check.sample_rows(256, 16, case.seed, 0))
    assert np.all(np.diff(rows) > 0) and rows.max() >= 192  # spread over the shard
    keep = torch.zeros(256)
    keep[torch.from_numpy(rows)] = 1
    dout = t.grad_out * keep.view(1, 1, -1, 1)
    ref = reference_attention(t.q, t.k, t.v, mask, grad_out=dout, scale=scale)
    shards = check.Shards(q=t.q, k=t.k, v=t.v, grad_out=dout, actual={})
    streamed = check.reference_of_rows(mask, layout, 0, rows, shards, scale, True)
    idx = torch.from_numpy(rows)
    torch.testing.assert_close(streamed["out"], ref.out.index_select(2, idx), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(streamed["dq"], ref.dq.index_select(2, idx), rtol=1e-10, atol=1e-10)
    assert ref.dq.index_select(2, torch.from_numpy(np.setdiff1d(np.arange(256), rows))).abs().max() == 0
    torch.testing.assert_close(streamed["dk"], ref.dk, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(streamed["dv"], ref.dv, rtol=1e-10, atol=1e-10)


def test_the_check_is_sampled_only_when_predicted_over_its_budget():
    from attnbench.cp.check import CHECK_SHARE, check_seconds, coverage, plan_rows

    rates = {"float32": 0.05}  # TFLOPs/s
    small = cp_case("ring_p2p", "causal", 4)
    assert plan_rows(small, rates).rows is None and coverage(small, S // 4)["mode"] == "full"
    big = cp_case("ring_p2p", "causal", 4, seqlen=1 << 17)
    plan = plan_rows(big, rates)
    assert plan.full_seconds > CHECK_SHARE * big.budget.case_seconds and plan.rows < (1 << 17) // 4
    assert plan.seconds <= plan.budget_seconds * 1.01
    assert coverage(big, plan.rows)["mode"] == "sampled" and str(plan.rows) in coverage(big, plan.rows)["reason"]
    # S^2 / W per rank: twice the length at twice the ranks costs twice as much per rank (CUDA: no sharing)
    one = cp_case("ring_p2p", "causal", 4, seqlen=4096).model_copy(update={"device": "cuda"})
    two = cp_case("ring_p2p", "causal", 8, seqlen=8192).model_copy(update={"device": "cuda"})
    assert check_seconds(two, 1024, rates) == pytest.approx(2 * check_seconds(one, 1024, rates))
    forward = cp_case("ring_p2p", "causal", 4, Pass.forward)
    assert check_seconds(forward, 64, rates) == pytest.approx(check_seconds(small, 64, rates) * 4 / 14)


def test_shards_are_the_single_process_values_at_any_world_size():
    from attnbench.inputs import BLOCK_TOKENS, make_shard, make_tensors

    case = cp_case("ring_p2p", "causal_document", 4, seqlen=3 * BLOCK_TOKENS + 40)
    whole = make_tensors(case)
    runs = np.array([[5, 17], [BLOCK_TOKENS - 3, BLOCK_TOKENS + 9], [2 * BLOCK_TOKENS + 1, 3 * BLOCK_TOKENS + 40]])
    part = make_shard(case, runs)
    positions = torch.from_numpy(np.concatenate([np.arange(a, b) for a, b in runs]))
    for name in ("q", "k", "v", "grad_out"):
        assert torch.equal(getattr(part, name), getattr(whole, name).index_select(2, positions)), name
    other_seed = make_tensors(case.model_copy(update={"seed": 1}))
    assert not torch.equal(other_seed.q, whole.q)
    assert not torch.equal(whole.k, whole.v)  # every tensor its own stream


def test_the_cp_tables_show_exposed_communication_and_the_share_hidden():
    import re

    from attnbench.cp.protocol import RankOutcome
    from attnbench.results.schema import Record
    from attnbench.results.tables import cp_tables, records_frame

    records = []
    for case, out in outcomes(2):
        if timed(case):
            o = RankOutcome.model_validate(out)
            measured = {k: getattr(o, k) for k in ("mask", "flops", "tflops", "timing", "memory", "accuracy", "cp")}
            records.append(Record.for_case(case, run_id="t", status=o.status, reason=o.reason, started_at="now",
                                           duration_s=1.0, **measured))
    [overlap] = [t for t in cp_tables(records_frame(records)) if t.title.startswith("CP overlap")]
    for record in records:
        method = record.case.cp.method
        text = overlap.frame.loc[f"{record.case.mask.label()} W=2", method]
        match = re.fullmatch(r"(-?[0-9.e+-]+) ms exposed, (\d+)% hidden", text)
        assert match, text
        o = record.cp.overlap
        assert float(match.group(1)) == pytest.approx(o.exposed_s * 1e3, rel=1e-2, abs=1e-3)
        assert int(match.group(2)) == round(100 * o.efficiency)


def test_the_core_never_imports_runner_cli_or_report():
    """Layers run one way: cp (and kernels, masks, measure) sit below the runner."""
    import ast
    from pathlib import Path

    import attnbench

    root = Path(attnbench.__file__).parent
    upper = ("attnbench.runner", "attnbench.cli", "attnbench.report")
    for package in ("cp", "kernels", "masks", "measure"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                assert not any(n.startswith(upper) for n in names), (str(path.relative_to(root)), names)


# -- a hostile local step ----------------------------------------------------------------------
def test_a_hostile_local_step_never_makes_an_ok_cp_record(monkeypatch):
    """Wrong only after the checked run, a nudge to its q shard too small for any tolerance, or
    a reset of the memory high-water mark: each is invalid, naming the rank; naive stays ok."""
    monkeypatch.setenv("ATTNBENCH_PLUGINS", "tests.plugins.hostile_cp_kernels")
    kernels = ["cp_first_forward_only", "cp_nudges_q", "cp_hides_memory", "naive"]
    cases = [cp_case("ring_p2p", "causal", 2, Pass.forward).model_copy(update={"kernel": k}) for k in kernels]
    got = {case.kernel: out for case, out in zip(cases, run_cases(cases, 2))}
    assert got["naive"]["status"] == "ok", got["naive"]["reason"]
    expected = {"cp_first_forward_only": "out of the last timed iteration differs from the checked run",
                "cp_nudges_q": "changed its input shards in place (q)",
                "cp_hides_memory": "memory high-water mark was reset"}
    for kernel, words in expected.items():
        out = got[kernel]
        assert out["status"] == "invalid" and out["reason"].startswith("rank ") and words in out["reason"], (kernel, out)
        assert out["accuracy"]["ok"], (kernel, out["accuracy"])  # the checked run itself was right


def test_the_documents_split_is_its_definition_one_document_at_a_time():
    """attnbench.cp.dispatch.documents works on every document at once; the definition (the
    module docstring), document by document, gives the same runs."""
    from attnbench.cp.dispatch import documents
    from attnbench.cp.slices import merge_runs

    def by_hand(seqlen, world, doc_starts):
        n = 2 * world
        owner = list(range(world)) + list(range(world))[::-1]
        runs = [[] for _ in range(world)]
        ptr = 0
        for s, e in zip(doc_starts[:-1], doc_starts[1:]):
            base, rem = divmod(int(e - s), n)
            extra = [0] * world
            for k in range(rem):
                extra[(ptr + k) % world] += 1
            ptr = (ptr + rem) % world
            sizes = [base] * n
            for r in range(world):
                sizes[n - 1 - r] += extra[r] >= 1
                sizes[r] += extra[r] >= 2
            at = s
            for p in range(n):
                runs[owner[p]].append([at, at + sizes[p]])
                at += sizes[p]
        return [merge_runs(np.array(r, dtype=np.int64)) for r in runs]

    rng = np.random.default_rng(0)
    for world in (1, 2, 3, 4, 8):
        for _ in range(5):
            lengths = rng.integers(1, 5 * world, size=int(rng.integers(1, 40)))
            seqlen = int(lengths.sum())
            lengths[-1] += (-seqlen) % world  # W divides S
            starts = np.concatenate([[0], np.cumsum(lengths)])
            got = documents(int(starts[-1]), world, starts)
            for mine, want in zip(got.runs, by_hand(int(starts[-1]), world, starts)):
                assert mine.tolist() == want.tolist()
            assert len({int(np.diff(r, axis=1).sum()) for r in got.runs}) == 1  # equal shards
