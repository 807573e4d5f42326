"""Context-parallel methods: correctness against the single-process reference at world sizes
1, 2 and 4 (gloo), every static mask for ring_p2p, load balance from slices, and counted
communication against the analytic expectation.

Spawning a gloo group costs seconds on this machine, so each world size runs all its cases
in one group (module-scoped fixture) and several tests read the outcomes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnbench.cases import Budget, Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp import CP_METHODS
from attnbench.cp.dispatch import contiguous, documents, imbalance, make_layout, rank_area, zigzag
from attnbench.cp.local import Partial, attend
from attnbench.cp.slices import LocalMask, local_mask
from attnbench.kernels import KERNELS
from attnbench.masks import MASKS, build_mask
from attnbench.masks.convert import dense

from tests.cp_harness import run_cases

S = 512
BUDGET = Budget(warmup_seconds=0.0, measure_seconds=0.01, min_repeats=1, max_repeats=2, case_seconds=60)
STATIC = sorted(n for n in MASKS.names() if not MASKS.get(n).dynamic)
#: small-S parameters: seed 3 draws 3 documents at S=512; windows and blocks below S
SMALL_PARAMS = {
    "window": 40, "block": 16, "global_tokens": 16, "sink": 4, "seed": 3,
}
ISSUE_MASKS = ["full", "causal", "causal_document", "sliding_window_causal", "share_question", "block_causal_document"]
METHODS = ["ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"]


def mask_params(name: str) -> dict:
    return {k: v for k, v in SMALL_PARAMS.items() if k in MASKS.get(name).params}


def cp_case(method: str, mask: str, world: int, pass_: Pass = Pass.forward_backward, *, heads=(4, 2),
            seqlen: int = S, **params) -> Case:
    return Case(
        kernel="naive", mask=MaskChoice(name=mask, params=mask_params(mask)),
        shape=Shape(batch=1, heads_q=heads[0], heads_kv=heads[1], head_dim=16, seqlen=seqlen),
        dtype="float32", pass_=pass_, budget=BUDGET,
        cp=CPSpec(method=method, world_size=world, params=params),
    )


def cases_for(world: int) -> list[Case]:
    cases = [cp_case(m, mask, world) for m in METHODS for mask in ISSUE_MASKS]
    cases += [cp_case("ring_p2p", "causal", world, Pass.forward), cp_case("ring_p2p", "causal_document", world, Pass.backward)]
    cases += [cp_case("ulysses", "causal", world, Pass.backward, heads=(4, 4))]
    if world == 1:
        cases += [cp_case("torch_cp", "causal", world)]
    if world == 4:
        # every static mask (the "not four" claim), contiguous and balanced dispatch
        cases += [cp_case("ring_p2p", mask, world) for mask in STATIC if mask not in ISSUE_MASKS]
        cases += [cp_case("ring_p2p", "causal", world, dispatch="contiguous")]
        # the double ring proper (2 windows of 2), and USP at both extremes
        cases += [cp_case("loongtrain", mask, world, ulysses_degree=1, window=2) for mask in ("causal", "causal_document")]
        cases += [cp_case("usp", "causal", world, ulysses_degree=d) for d in (1, 4)]
    return cases


_OUTCOMES: dict[int, list] = {}


def outcomes(world: int) -> list[tuple[Case, dict]]:
    if world not in _OUTCOMES:
        cases = cases_for(world)
        _OUTCOMES[world] = list(zip(cases, run_cases(cases, world)))
    return _OUTCOMES[world]


def label(case: Case) -> str:
    return f"{case.cp.method}{dict(case.cp.params)} {case.mask.name} {case.pass_.value}"


# -- correctness against the reference -----------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_method_matches_the_reference(world):
    checked = set()
    for case, out in outcomes(world):
        if case.cp.method == "torch_cp":
            continue
        assert out["status"] == "ok", (label(case), out.get("reason"), out.get("detail"))
        tensors = out["accuracy"]["tensors"]
        expected = {"out", "lse"} | ({"dq", "dk", "dv"} if case.pass_.needs_grad else set())
        assert set(tensors) == expected, label(case)
        for name, t in tensors.items():
            assert t["ok"] and t["rel_l2"] is not None and t["rel_l2"] <= t["tolerance"], (label(case), name, t)
            assert t["rel_l2"] < 1e-5, (label(case), name, t)  # float32 math: far inside tolerance
        checked.add((case.cp.method, case.mask.name))
    for method in METHODS:
        for mask in ISSUE_MASKS:
            assert (method, mask) in checked
    if world == 4:
        assert {("ring_p2p", m) for m in STATIC} <= checked


@pytest.mark.parametrize("world", [2, 4])
def test_metrics_per_case(world):
    for case, out in outcomes(world):
        cp = out["cp"]
        assert cp["world_size"] == world and cp["backend"] == "gloo"
        assert len(cp["rank_median_s"]) == world and len(cp["rank_area"]) == world
        assert len(cp["rank_peak_bytes"]) == world
        assert out["timing"]["median_s"] > 0 and out["timing"]["median_s"] >= max(cp["rank_median_s"]) * 0.999 - 1e-12 \
            or out["timing"]["repeats"] <= 2
        assert cp["imbalance"] >= 1.0 and cp["area_imbalance"] >= 1.0
        mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params)
        assert sum(cp["rank_area"]) == pytest.approx(mask.area, abs=world)
        assert out["flops"] == pytest.approx(4 * case.shape.heads_q * case.shape.head_dim * mask.area * case.pass_.flop_factor)
        assert cp["per_gpu_tflops"] == pytest.approx(out["flops"] / (out["timing"]["median_s"] * world) / 1e12)


# -- communication --------------------------------------------------------------------------
@pytest.mark.parametrize("world", [2, 4])
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
    assert {"ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"} <= seen


def test_analytic_formulas_by_hand():
    e = 4  # float32
    B, Hq, Hkv, D, W = 1, 4, 2, 16, 4
    ring = CP_METHODS.get("ring_p2p").expected_comm(cp_case("ring_p2p", "causal", W))
    assert ring["forward"] == ring["backward"] == ((W - 1) * 2 * B * Hkv * (S // W) * D * e, W - 1)
    gather = CP_METHODS.get("ring_allgather").expected_comm(cp_case("ring_allgather", "causal", W))
    assert gather["forward"] == ((W - 1) * 2 * B * Hkv * (S // W) * D * e, 1)
    uly = CP_METHODS.get("ulysses").expected_comm(cp_case("ulysses", "causal", W))
    rep = 2  # 2 KV heads repeated to 4 for 4 ranks
    per = B * (S // W) * D * e
    assert uly["forward"] == (per * (Hq + 2 * Hkv * rep) * (W - 1) // W + per * Hq * (W - 1) // W, 2)
    assert "backward" not in CP_METHODS.get("ulysses").expected_comm(cp_case("ulysses", "causal", W, Pass.forward))


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


def test_lse_merge_of_partial_steps_equals_one_step_with_gradients():
    torch.manual_seed(0)
    kernel = KERNELS.get("naive")
    mask = build_mask("causal_document", 128, {"seed": 3})
    all_runs = np.array([[0, 128]])
    halves = [np.array([[0, 64]]), np.array([[64, 128]])]
    q0 = torch.randn(1, 4, 128, 8, dtype=torch.float64)
    k0 = torch.randn(1, 2, 128, 8, dtype=torch.float64)
    v0 = torch.randn(1, 2, 128, 8, dtype=torch.float64)
    go = torch.randn(1, 4, 128, 8, dtype=torch.float64)

    def run(split: bool):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        if split:  # keys in two steps, the second first; rows < 64 have no key in it (lse -inf)
            acc = Partial()
            for part in reversed(halves):
                a, b = part[0]
                acc.add(*attend(q, k[:, :, a:b], v[:, :, a:b], local_mask(mask.slices, all_runs, part), 0.3, kernel))
            out, lse = acc.result(q.dtype)
        else:
            out, lse = attend(q, k, v, local_mask(mask.slices, all_runs, all_runs), 0.3, kernel)
        grads = torch.autograd.grad((out * go).sum() + lse.sum(), (q, k, v))
        return out, lse, grads

    one, two = run(False), run(True)
    assert torch.isfinite(two[1]).all()
    tight = dict(rtol=1e-5, atol=1e-5)  # the naive step computes in float32
    torch.testing.assert_close(two[0], one[0], **tight)
    torch.testing.assert_close(two[1], one[1], **tight)
    for a, b in zip(two[2], one[2]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tight)


def test_an_empty_step_calls_no_kernel_and_gives_zero_gradients():
    class Boom:
        def attend_slices(self, *args):
            raise AssertionError("kernel called for an empty step")

    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    k = torch.randn(1, 2, 8, 4, requires_grad=True)
    empty = LocalMask(local_mask(build_mask("causal", 16).slices, [[0, 8]], [[8, 16]]).slices, 8, 8)
    assert empty.empty
    out, lse = attend(q, k, k, empty, 1.0, Boom())
    assert (out == 0).all() and torch.isneginf(lse).all()
    gq, gk = torch.autograd.grad(out.sum(), (q, k))
    assert (gq == 0).all() and (gk == 0).all()


def test_a_wrong_result_is_invalid():
    """The accuracy decision of the worker fails a wrong merge (here: one step's output lost)."""
    from attnbench.cp.worker import _check, world_factor
    from attnbench.runner.inputs import make_tensors

    case = cp_case("ring_p2p", "causal", 4, Pass.forward)
    mask = build_mask("causal", S)
    tensors = make_tensors(case)
    scale = 1 / math.sqrt(16)
    kernel = KERNELS.get("naive")
    everything = np.array([[0, S]])
    good_out, good_lse = attend(tensors.q, tensors.k, tensors.v, local_mask(mask.slices, everything, everything), scale, kernel)
    assert _check(case, mask, tensors, {"out": good_out, "lse": good_lse}, scale, 4).ok
    half = np.array([[S // 2, S]])
    bad_out, bad_lse = attend(tensors.q, tensors.k[:, :, S // 2:], tensors.v[:, :, S // 2:],
                              local_mask(mask.slices, everything, half), scale, kernel)
    bad_out = torch.where(torch.isfinite(bad_lse).unsqueeze(-1), bad_out, good_out)  # only rows >= S/2 wrong
    bad_lse = torch.where(torch.isfinite(bad_lse), bad_lse, good_lse)
    result = _check(case, mask, tensors, {"out": bad_out, "lse": bad_lse}, scale, 4)
    assert not result.ok and not result.tensors["out"].ok and not result.tensors["lse"].ok
    assert world_factor(4) == 2.0
