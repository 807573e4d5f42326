"""The CP cost model of `attnbench advise` on synthetic figures: answers worked out by hand."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest

from attnbench.advise.compute import ComputeModel, Curve
from attnbench.advise.network import LinkFit, NetworkProfile, Overlap, Point, Section, fit_link, hops
from attnbench.advise.predict import Predictor
from attnbench.advise.rank import Question, advise
from attnbench.advise.timeline import backward_ops, forward_ops, simulate
from attnbench.cases import Budget, Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp import CP_METHODS
from attnbench.cp.ring import transfers
from attnbench.cp.schedule import Collective, RingSpec, Schedule
from attnbench.masks import build_mask
from tests.helpers import ROOT

RATE = 1e12  # synthetic kernel: exactly RATE FLOPs/s at every size, no overhead


def flat_compute(kernel: str = "flex", dense: bool = False, memory: int | None = None) -> ComputeModel:
    curves = {(kernel, "float32", p, None, None): Curve.of([(1e9, 1e9 / RATE), (1e12, 1e12 / RATE)], f"{kernel} {p}")
              for p in ("forward", "backward")}
    return ComputeModel(source="synthetic", device="cuda", device_name="synthetic", memory_bytes=memory, curves=curves,
                        dense={kernel: dense}, mask_key=lambda m: m.name, kernels=(kernel,))


def link(latency: float, bandwidth: float, hop: float = 0.0) -> dict:
    return {op: LinkFit(latency_s=latency, hop_latency_s=hop, bandwidth_Bps=bandwidth)
            for op in ("all_to_all", "all_gather", "reduce_scatter", "p2p")}


def network(intra=(1e-5, 1e10), inter=(1e-4, 1e9), overlap: float = 1.0) -> NetworkProfile:
    return NetworkProfile(name="synthetic", description="test", backend="nccl", device="cuda", sections=[
        Section(world_size=None, links={"intra": link(*intra), "inter": link(*inter)},
                overlap=Overlap(hidden=overlap, source="test"))])


def cp_case(method: str, world: int, *, mask: str = "full", seqlen: int = 1024, heads=(8, 4), head_dim: int = 16,
            pass_: str = "forward", per_node: int | None = None, **params) -> Case:
    return Case(kernel="flex", mask=MaskChoice(name=mask), dtype="float32", pass_=Pass(pass_), device="cuda",
                shape=Shape(batch=1, heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim, seqlen=seqlen),
                check_accuracy=False, budget=Budget(),
                cp=CPSpec(method=method, world_size=world, params=params, ranks_per_node=per_node))


# -- the network model -------------------------------------------------------------------
def test_fit_recovers_latency_per_hop_latency_and_bandwidth():
    truth = LinkFit(latency_s=50e-6, hop_latency_s=10e-6, bandwidth_Bps=2e9)
    points = [Point(size=n, bytes=b, seconds=truth.seconds("all_gather", b, n))
              for n in (2, 4, 8) for b in (1 << 10, 1 << 16, 1 << 22)]
    fit = fit_link("all_gather", points)
    assert fit.latency_s == pytest.approx(50e-6, rel=1e-6)
    assert fit.hop_latency_s == pytest.approx(10e-6, rel=1e-6)
    assert fit.bandwidth_Bps == pytest.approx(2e9, rel=1e-6)
    assert fit.fit_error == pytest.approx(0.0, abs=1e-9)
    # one group size: the hop term cannot be told from the latency; p2p has one hop per call
    p2p = fit_link("p2p", [Point(size=2, bytes=b, seconds=3e-6 + b / 1e9) for b in (1e3, 1e6)])
    assert (p2p.latency_s, p2p.hop_latency_s) == (pytest.approx(3e-6), 0.0) and hops("p2p", 8) == 1


def test_measured_points_price_calls_between_and_beyond_them():
    """gloo-like: flat, then a jump the line cannot follow; priced from the points themselves."""
    pts = [Point(size=2, bytes=b, seconds=t) for b, t in ((1 << 10, 1e-4), (1 << 14, 1e-4), (1 << 16, 2e-3), (1 << 18, 4e-3))]
    fit = fit_link("p2p", pts)
    assert fit.seconds("p2p", 1 << 16, 2) == pytest.approx(2e-3)  # a measured size: its time
    assert fit.seconds("p2p", 1 << 17, 2) == pytest.approx(np.sqrt(2e-3 * 4e-3))  # halfway in log-log
    assert fit.seconds("p2p", 100, 2) == pytest.approx(1e-4)  # below: latency-bound
    extra = (1 << 20) - (1 << 18)
    assert fit.seconds("p2p", 1 << 20, 2) == pytest.approx(4e-3 + extra / fit.bandwidth_Bps)
    assert fit.line("p2p", 1 << 16, 2) != pytest.approx(2e-3, rel=0.05)  # the line misses the jump
    # points of another group size: the nearest one measured (larger first)
    assert fit.seconds("p2p", 1 << 16, 4) == pytest.approx(2e-3)
    # no points (a published profile): the line
    bare = LinkFit(latency_s=1e-5, bandwidth_Bps=1e9)
    assert bare.seconds("all_gather", 1e6, 4) == pytest.approx(1e-5 + 1e-3)


def test_groups_are_priced_on_their_link():
    net = network(intra=(1e-6, 100e9), inter=(10e-6, 10e9))
    nbytes = 7e9
    # 8 consecutive ranks of one node: NVLink-like; 7 hops of an all-gather
    assert net.seconds("all_gather", nbytes, list(range(8)), 8, 64) == pytest.approx(1e-6 + 7e9 / 100e9)
    # one rank per node: every byte crosses nodes
    assert net.seconds("all_gather", nbytes, list(range(0, 64, 8)), 8, 64) == pytest.approx(10e-6 + 7e9 / 10e9)
    # an all-to-all over 16 ranks on 2 nodes: 8 of its 15 peers are remote, the rest local, at once
    remote, local = nbytes * 8 / 15, nbytes * 7 / 15
    assert net.seconds("all_to_all", nbytes, list(range(16)), 8, 64) == pytest.approx(
        10e-6 + max(remote / 10e9, local / 100e9))


# -- the timeline ------------------------------------------------------------------------
def _ring2(overlap: float, transfer_s: float):
    schedule = Schedule(heads_q=1, heads_kv=1, rings=(RingSpec(2, 1),), chunk_bytes=1, grad_bytes=1)
    steps = np.array([[2.0, 1.0], [1.0, 1.0]])  # rank 0's first step is the long one
    return simulate(schedule, "forward", steps, collective=lambda *a: 0.0,
                    transfer=lambda nbytes, dst, size: np.full(len(dst), transfer_s), overlap=overlap)


def test_a_ring_of_two_by_hand():
    # transfer 3 s, longer than any step: both ranks wait for it after step 0, then do step 1
    slow = _ring2(1.0, 3.0)
    assert slow.end_s.tolist() == [4.0, 4.0] and slow.seconds == 4.0
    assert slow.compute_s.tolist() == [3.0, 2.0]  # exposed on the slowest: 4 - 3 = 1 s
    # transfer 0.5 s: hidden behind step 0; rank 0 is the slow one (its steps sum to 3 s)
    fast = _ring2(1.0, 0.5)
    assert fast.end_s.tolist() == [3.0, 2.0]
    # nothing hidden (overlap 0): each rank's step 0 is longer by the transfer it overlapped
    serial = _ring2(0.0, 0.5)
    assert serial.end_s.tolist() == [3.5, 2.5] and serial.contention_s.tolist() == [0.5, 0.5]


def test_collectives_wait_for_the_last_member():
    schedule = Schedule(heads_q=1, heads_kv=1, post=(Collective("all_to_all", 100, 2, 1),))
    steps = np.array([[1.0], [3.0], [2.0], [0.5]])
    t = simulate(schedule, "forward", steps, collective=lambda op, b, members: 0.25,
                 transfer=lambda b, d, size: np.zeros(len(d)), overlap=1.0)
    assert t.end_s.tolist() == [3.25, 3.25, 2.25, 2.25]


@pytest.mark.parametrize("sizes", [(4,), (2, 2), (3, 1), (2, 4), (1, 2)])
def test_ring_operations_send_what_the_ring_sends(sizes):
    levels = tuple(RingSpec(n, 1) for n in sizes)
    kv, acc = transfers(sizes)
    steps = int(np.prod(sizes))
    fwd, bwd = list(forward_ops(levels)), list(backward_ops(levels))
    assert sum(op[0] == "step" for op in fwd) == sum(op[0] == "step" for op in bwd) == steps
    assert sum(op[0] == "post" for op in fwd) == kv
    assert sum(op[0] == "post" and op[3] == "kv" for op in bwd) == kv
    assert sum(op[0] == "post" and op[3] == "grad" for op in bwd) == acc
    for ops in (fwd, bwd):  # every transfer posted is waited for
        assert sorted(op[2] for op in ops if op[0] == "post") == sorted(op[1] for op in ops if op[0] == "wait")


# -- the schedule is the method -------------------------------------------------------------
MODELLED = ["ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("name", MODELLED)
def test_schedule_bytes_equal_the_analytic_bytes_and_steps_the_rank_areas(name, world):
    method = CP_METHODS.get(name)
    for pass_ in ("forward", "backward"):
        case = cp_case(name, world, mask="causal_document", pass_=pass_, heads=(8, 2))
        if method.model_unsupported_reason(case):
            continue
        mask = build_mask("causal_document", case.shape.seqlen, {})
        plan = method.plan(case, mask)
        s = method.schedule(case, plan)
        before, after = s.collectives(pass_)
        sent = sum(c.bytes for c in before + after)
        ops = list(forward_ops(s.rings) if pass_ == "forward" else backward_ops(s.rings)) if s.rings else []
        sent += sum(s.chunk_bytes if op[3] == "kv" else s.grad_bytes for op in ops if op[0] == "post")
        assert sent == method.expected_comm(case)[pass_][0], (name, world, pass_)
        predictor = Predictor(flat_compute(), network(), world)
        areas = predictor._pair_areas(mask, plan.ring)
        for rank in range(world):
            work = sum(areas[rank // plan.ulysses, list(src)].sum() for src in method.step_sources(case, plan, rank))
            assert work / plan.ulysses == pytest.approx(plan.rank_area(mask)[rank], abs=1), (name, world, rank)


# -- one case, by hand ---------------------------------------------------------------------
def test_ulysses_forward_by_hand():
    """W = 4 on one node: all-to-all of q, k, v in, local attention of 2 heads over the whole
    full mask, all-to-all of the output back."""
    lat, bw = 1e-5, 1e10
    case = cp_case("ulysses", 4, heads=(8, 4), head_dim=16, seqlen=1024)
    mask = build_mask("full", 1024, {})
    p = Predictor(flat_compute(), network(intra=(lat, bw)), 4).predict(case, mask, CP_METHODS.get("ulysses"))
    L = 1024 // 4
    qkv_in = (8 + 2 * 4) * L * 16 * 4 * 3 // 4  # float32, 3/4 of it leaves the rank
    out = 8 * L * 16 * 4 * 3 // 4
    compute = 4 * 2 * 16 * 1024 * 1024 / RATE  # 2 query heads per rank, every pair
    hop = 3  # n - 1 steps of latency per call (hop latency 0 here)
    expected = (lat + qkv_in / bw) + compute + (lat + out / bw)
    cost = p.passes["forward"]
    assert hop == 3 and cost.seconds == pytest.approx(expected, rel=1e-9)
    assert cost.compute_s == pytest.approx(compute) and cost.exposed_s == pytest.approx(expected - compute)
    assert cost.hidden == pytest.approx(0.0, abs=1e-9)  # nothing overlaps a blocking all-to-all


def test_calibration_scales_compute_and_communication_of_its_world_sizes():
    from attnbench.advise.calibrate import Calibration, calibration_from
    from attnbench.advise.check import CheckReport, CheckRow

    def row(world, comp, comm, pred_comp, pred_comm, total=1.0, overlaps=True):
        return CheckRow(label="m", mask="full", world_size=world, pass_="forward", measured_s=total, measured_p20_s=total,
                        measured_p80_s=total, predicted_s=1.0, measured_alone={"compute_s": comp, "communication_s": comm},
                        predicted_alone={"compute_s": pred_comp, "communication_s": pred_comm}, overlaps=overlaps)

    report = CheckReport(run_id="A", compute_source="c", network_source="n", groups=[], pass_groups=[], rows=[
        row(4, 2.0, 3.0, 1.0, 1.0), row(4, 4.0, 1.0, 1.0, 1.0), row(4, 3.0, 2.0, 1.0, 1.0, total=6.0, overlaps=False),
        row(1, 1.5, 0.1, 1.0, 0.0)])
    cal = calibration_from(report)
    assert cal.compute == {4: 3.0, 1: 1.5} and cal.communication == {4: 2.0}  # medians; W = 1 sends nothing
    # ring overlap: (2 + 3 - 1) / 2 = 2 -> 1 (clipped); (4 + 1 - 1) / 1 = 4 -> 1; the blocking row does not count
    assert cal.overlap == {4: 1.0} and cal.communication_factor(2) == 1.0 and cal.overlap_of(2) is None

    lat, bw = 1e-5, 1e10
    case = cp_case("ulysses", 4, heads=(8, 4), head_dim=16, seqlen=1024)
    mask = build_mask("full", 1024, {})
    scaled = Calibration(run_id="A", compute={4: 3.0}, communication={4: 2.0}, cases={4: 3})
    plain = Predictor(flat_compute(), network(intra=(lat, bw)), 4).predict(case, mask, CP_METHODS.get("ulysses"))
    calib = Predictor(flat_compute(), network(intra=(lat, bw)), 4, scaled).predict(case, mask, CP_METHODS.get("ulysses"))
    p, c = plain.passes["forward"], calib.passes["forward"]
    assert c.compute_s == pytest.approx(3.0 * p.compute_s)
    assert c.seconds - c.compute_s == pytest.approx(2.0 * (p.seconds - p.compute_s))  # the two all-to-alls


def test_a_ring_backward_recomputes_its_forward_only_for_a_kernel_without_a_slice_backward():
    model = flat_compute()
    causal = build_mask("causal", 64, {})
    kw = dict(batch=1, heads_q=8, head_dim=16, area=4e5, q_len=1e3, k_len=1e3, path="ring")
    fwd = model.seconds("flex", "float32", "forward", causal, **kw)
    assert fwd == pytest.approx(4 * 8 * 16 * 4e5 / RATE)
    bwd_alone = model.seconds("flex", "float32", "backward", causal, **{**kw, "path": None})
    assert bwd_alone == pytest.approx(2.5 * fwd)
    model.ring_recomputes = {"flex": True}  # flex: attnbench.cp.local recomputes the step under autograd
    assert model.seconds("flex", "float32", "backward", causal, **kw) == pytest.approx(3.5 * fwd)
    model.ring_recomputes = {"flex": False}  # a flash kernel's published backward works from the lse
    assert model.seconds("flex", "float32", "backward", causal, **kw) == pytest.approx(2.5 * fwd)


def test_ring_forward_by_hand_shows_imbalance_of_a_contiguous_causal_split():
    """ring_p2p, causal, W = 2, contiguous: rank 0 has 1 step of a causal square (rank 1's keys
    are all in its future: an empty step, no kernel), rank 1 a causal square and a full one."""
    S, lat, bw = 1024, 1e-6, 1e12
    case = cp_case("ring_p2p", 2, mask="causal", seqlen=S, heads=(8, 4), dispatch="contiguous")
    mask = build_mask("causal", S, {})
    p = Predictor(flat_compute(), network(intra=(lat, bw)), 2).predict(case, mask, CP_METHODS.get("ring_p2p"))
    half = S // 2
    tri = half * (half + 1) / 2
    flops = lambda pairs: 4 * 8 * 16 * pairs / RATE  # noqa: E731
    transfer = lat + 2 * 4 * half * 16 * 4 / bw  # K and V of 4 heads, float32
    rank1 = max(flops(tri), transfer) + flops(half * half)
    cost = p.passes["forward"]
    assert cost.seconds == pytest.approx(rank1) and cost.compute_s == pytest.approx(flops(tri) + flops(half * half))
    assert cost.mean_compute_s == pytest.approx((2 * flops(tri) + flops(half * half)) / 2)
    assert cost.imbalance == pytest.approx((flops(tri) + flops(half * half)) / cost.mean_compute_s)


def test_ranks_sharing_cores_hand_an_idle_ranks_share_to_the_busy_ones():
    from attnbench.advise.cores import share_cores

    # 3 busy of 4 ranks on 2 cores: 2/3 of a core each until the 1 s job ends (1.5 s), then a
    # core each: the 2 s job ends at 2.5 s, the 3 s job at 3.5 s; the idle rank takes nothing
    assert share_cores(np.array([1.0, 2.0, 0.0, 3.0]), 2, 4).tolist() == pytest.approx([1.5, 2.5, 0.0, 3.5])
    # steps are separate rounds; every rank busy = ranks / cores times longer; a core each = alone
    steps = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert share_cores(steps, 2, 4).tolist() == [[2.0, 1.0], [2.0, 0.0], [2.0, 1.0], [2.0, 0.0]]
    assert share_cores(steps, 2, 2).tolist() == steps.tolist()  # two nodes of 2 ranks on 2 cores each


def cpu_compute(cores: int) -> ComputeModel:
    model = flat_compute(dense=True)
    model.device, model.cores = "cpu", cores
    return model


def test_a_contiguous_causal_ring_on_shared_cores_by_hand():
    """ring_p2p, causal, contiguous, W = 4 on 2 cores, a dense kernel (every non-empty step is
    its whole square): rank r computes r + 1 of the 4 steps (the keys of later ranks are in
    its future). All 4 compute step 0 (2 per core: 2 units), 3 step 1 (1.5), 2 step 2 (1),
    1 step 3 (1): 5.5 units for the last rank, not the 8 of every rank always busy; the
    compute-only loop (no transfers between steps) shares the cores over the rank totals
    (1, 2, 3, 4 units end at 2, 3.5, 4.5, 5.5: the same here)."""
    S = 1024
    case = cp_case("ring_p2p", 4, mask="causal", seqlen=S, heads=(8, 4), dispatch="contiguous")
    mask = build_mask("causal", S, {})
    fast = network(intra=(1e-9, 1e15))  # transfers ~free
    unit = 4 * 8 * 16 * (S // 4) ** 2 / RATE  # one dense step
    p = Predictor(cpu_compute(2), fast, 4).predict(case, mask, CP_METHODS.get("ring_p2p"), alone=True)
    assert p.passes["forward"].seconds == pytest.approx(5.5 * unit, rel=1e-4)
    assert p.alone["forward"]["compute_s"] == pytest.approx(5.5 * unit)
    # a core per rank: the last rank's 4 steps
    assert Predictor(cpu_compute(4), fast, 4).predict(case, mask, CP_METHODS.get("ring_p2p")).passes[
        "forward"].seconds == pytest.approx(4.0 * unit, rel=1e-4)


def test_a_double_ring_with_a_level_of_one_is_the_single_ring():
    from attnbench.advise.predict import plan_identity

    mask = build_mask("full", 1024, {})
    ident = {name: plan_identity(CP_METHODS.get(name), cp_case(name, 2, **params), mask)
             for name, params in (("ring_p2p", {}), ("loongtrain", {"ulysses_degree": 1}), ("ulysses", {}))}
    assert ident["loongtrain"] == ident["ring_p2p"] != ident["ulysses"]


def test_what_following_the_prediction_costs_and_when_the_run_cannot_tell():
    from attnbench.advise.check import CheckReport, CheckRow, _groups

    def row(label, measured, p20, p80, predicted):
        return CheckRow(label=label, mask="full", world_size=4, pass_="forward", measured_s=measured,
                        measured_p20_s=p20, measured_p80_s=p80, predicted_s=predicted, plan=(label,))

    tied, = _groups([row("a", 1.0, 0.9, 1.1, 2.0), row("b", 1.05, 1.0, 1.2, 1.0)], by_pass=False)
    apart, = _groups([row("a", 1.0, 0.9, 1.1, 2.0), row("b", 1.5, 1.2, 1.8, 1.0)], by_pass=False)
    assert (tied.agree, tied.within_noise, tied.regret) == (False, True, pytest.approx(0.05))
    assert (apart.agree, apart.within_noise, apart.regret) == (False, False, pytest.approx(0.5))
    assert CheckReport.within_noise([tied, apart]) == 0.5
    assert CheckReport.regrets([tied, apart]) == (pytest.approx(0.275), pytest.approx(0.5))


def test_runs_pooled_by_the_median_of_each_case_measured_in_all_of_them():
    from attnbench.advise.check import CheckReport, CheckRow, _groups, pooled

    def row(label, measured, predicted=1.0):
        return CheckRow(label=label, mask="full", world_size=4, pass_="forward", measured_s=measured,
                        measured_p20_s=0.9 * measured, measured_p80_s=1.1 * measured, predicted_s=predicted, plan=(label,))

    def report(run_id, rows):
        return CheckReport(run_id=run_id, compute_source="c", network_source="n", rows=rows,
                           groups=_groups(rows, by_pass=False), pass_groups=[])

    runs = [report("A", [row("a", 1.0), row("b", 3.0, 2.0), row("c", 9.0)]),  # b disturbed in A
            report("B", [row("a", 2.0), row("b", 1.5, 2.0), row("c", 9.0)]),
            report("C", [row("a", 1.2), row("b", 1.4, 2.0)])]  # c missing: not pooled
    both = pooled(runs)
    assert both.run_id == "A + B + C" and [r.run_id for r in both.runs] == ["A", "B", "C"]
    measured = {r.label: (r.measured_s, r.measured_p20_s, r.measured_p80_s) for r in both.rows}
    assert measured == {"a": pytest.approx((1.2, 1.08, 1.32)), "b": pytest.approx((1.5, 1.35, 1.65))}
    [group] = both.groups
    assert (group.measured_best, group.predicted_best) == ("a", "a")
    assert [g.measured_best for r in runs for g in r.groups] == ["a", "b", "a"]  # B alone: b


# -- ranking --------------------------------------------------------------------------------
def test_advise_ranks_explains_and_says_what_does_not_fit():
    q = Question(mask="causal", mask_params={}, seqlen=4096, gpus=8, gpus_per_node=4, heads_q=8, heads_kv=4,
                 head_dim=16, dtype="float32", kernel="flex")
    slow_net = network(intra=(1e-3, 1e8), inter=(1e-2, 1e7), overlap=1.0)  # communication dominates
    advice = advise(q, Predictor(flat_compute(), slow_net, 4), memory_bytes=None)
    ranked = advice.ranked
    assert [o.rank for o in ranked] == list(range(1, len(ranked) + 1))
    assert [o.seconds for o in ranked] == sorted(o.seconds for o in ranked)
    assert ranked[0].reason.startswith("fastest")
    assert all("vs the fastest" in o.reason for o in ranked[1:])
    assert any("exposed communication" in o.reason for o in ranked[1:])
    same = [o for o in advice.options if o.status == "same plan"]
    assert any(o.method == "usp" and o.params.get("ulysses_degree") == 1 for o in same)  # usp at u = 1 is ring_p2p
    assert any(o.status == "not modelled" and o.method == "torch_cp" for o in advice.options)
    # a memory limit below every estimate: nothing fits, each says by how much
    tight = advise(q, Predictor(flat_compute(), slow_net, 4), memory_bytes=1 << 10)
    assert not tight.ranked and all(o.reason.startswith("does not fit") for o in tight.options if o.status == "does not fit")
    # ring_allgather holds the whole sequence's K, V: more memory per rank than the ring
    peak = {o.label: o.peak_bytes for o in advice.options if o.predictions}
    assert peak["ring_allgather(dispatch=zigzag)"] > peak["ring_p2p(dispatch=zigzag)"]


def test_the_fastest_per_group_and_one_plan_under_two_names():
    from attnbench.advise.check import CheckRow, _groups

    def row(label, world, measured, predicted, plan):
        return CheckRow(label=label, mask="full", world_size=world, pass_="forward", measured_s=measured,
                        measured_p20_s=measured, measured_p80_s=measured, predicted_s=predicted, plan=plan)

    rows = [row("ring_p2p", 2, 1.2, 1.0, ("ring",)), row("usp", 2, 1.0, 1.0, ("ring",)), row("ulysses", 2, 1.5, 2.0, ("a2a",)),
            row("ring_p2p", 4, 3.0, 2.0, ("ring4",)), row("ulysses", 4, 2.0, 3.0, ("a2a4",))]
    two, four = _groups(rows, by_pass=False)
    # W = 2: usp measured fastest, ring_p2p predicted (first of the tie): one plan, two names
    assert (two.measured_best, two.predicted_best, two.agree, two.agree_plan) == ("usp", "ring_p2p", False, True)
    assert two.margin == pytest.approx(0.2) and two.methods == 3
    assert (four.measured_best, four.predicted_best, four.agree, four.agree_plan) == ("ulysses", "ring_p2p", False, False)

    # the same suite measured again: ring_p2p fastest at W = 2 (usp's plan), ring_p2p at W = 4
    from attnbench.advise.check import CheckReport, run_agreement

    again = [row("ring_p2p", 2, 0.9, 1.0, ("ring",)), row("usp", 2, 1.5, 1.0, ("ring",)), row("ulysses", 2, 1.5, 2.0, ("a2a",)),
             row("ring_p2p", 4, 1.5, 2.0, ("ring4",)), row("ulysses", 4, 3.0, 3.0, ("a2a4",))]

    def report(rs, run_id):
        return CheckReport(run_id=run_id, compute_source="c", network_source="n", rows=rs,
                           groups=_groups(rs, by_pass=False), pass_groups=[])

    ref = run_agreement(report(rows, "B"), report(again, "A"))
    assert (ref.run_id, ref.cases, ref.groups, ref.same_fastest, ref.same_fastest_plan) == ("A", 5, 2, 0, 1)
    # |this / other - 1|: 1.2/0.9, 1.0/1.5, 1.5/1.5, 3.0/1.5, 2.0/3.0 -> median of (1/3, 1/3, 0, 1, 1/3)
    assert ref.median_abs_difference == pytest.approx(1 / 3)
    assert ref.by_world == {2: pytest.approx(1 / 3), 4: pytest.approx(2 / 3)}  # (1/3, 1/3, 0) and (1, 1/3)
    # predicted / measured - 1: W = 2: 1/1.2, 1/1, 2/1.5 -> (1/6, 0, 1/3); W = 4: 2/3, 3/2 -> (1/3, 1/2)
    assert report(rows, "B").median_abs_error_by_world == {2: pytest.approx(1 / 6), 4: pytest.approx(5 / 12)}


# -- the CLI --------------------------------------------------------------------------------
def test_advise_and_check_from_the_command_line(tmp_path, monkeypatch, capsys):
    """A CP run whose times are the model's own (one case 3x slower): the check reports that
    case's error and the group it flips; advise --json ranks from shipped published profiles."""
    from attnbench.advise.check import check_run
    from attnbench.results.schema import CPResult
    from tests.helpers import run_cli
    from tests.synthetic_runs import Spec, gpu_env, write_run

    env = gpu_env(device__requested="cpu", device__name="cpu", cpu={"affinity_cpus": 64})
    kernel_specs = []
    for S in (256, 1024, 4096):
        for pass_ in ("forward", "backward"):
            c = Case(kernel="naive", mask=MaskChoice(name="full"), dtype="float32", pass_=Pass(pass_), device="cpu",
                     shape=Shape(batch=1, heads_q=8, heads_kv=2, head_dim=16, seqlen=S), budget=Budget())
            work = 4 * 8 * 16 * S * S * (2.5 if pass_ == "backward" else 1.0)
            kernel_specs.append(Spec(case=c, samples=[work / RATE] * 3, extra={"mask": {"area": float(S * S)}}))
    kernel_run = write_run(tmp_path / "runs", kernel_specs, env)
    net = network(intra=(1e-4, 1e9)).model_copy(update={"backend": "gloo", "device": "cpu"})
    net_file = tmp_path / "net.json"
    net_file.write_text(net.model_dump_json())

    from attnbench.advise.compute import from_run

    from attnbench.advise.calibrate import Calibration
    from attnbench.results.schema import CPOverlap

    model = Predictor(from_run(kernel_run), net, 4)
    # what run A measured: compute alone 3x, communication alone 2x the model's (a shared machine)
    slower = Predictor(from_run(kernel_run), net, 4, Calibration(run_id="A", compute={4: 3.0}, communication={4: 2.0},
                                                                 cases={4: 6}))

    def cp_runs(predictor, *, alone_scale=None, slow=None):
        specs = []
        for name in ("ulysses", "ring_p2p", "ring_allgather"):
            for pass_ in ("forward", "backward"):
                c = Case(kernel="naive", mask=MaskChoice(name="full"), dtype="float32", pass_=Pass(pass_), device="cpu",
                         shape=Shape(batch=1, heads_q=8, heads_kv=2, head_dim=16, seqlen=1024), budget=Budget(),
                         cp=CPSpec(method=name, world_size=4))
                p = predictor.predict(c, build_mask("full", 1024, {}), CP_METHODS.get(name), alone=True)
                t = p.seconds * (slow or {}).get((name, pass_), 1.0)
                overlap = None
                if alone_scale:
                    a = p.alone[pass_]
                    overlap = CPOverlap(compute_s=a["compute_s"] * alone_scale[0],
                                        communication_s=a["communication_s"] * alone_scale[1], exposed_s=0.0)
                cp = CPResult(world_size=4, backend="gloo", rank_median_s=[t] * 4, mean_s=t, imbalance=1.0,
                              rank_area=[0] * 4, area_imbalance=1.0, comm={}, comm_expected={}, overlap=overlap)
                specs.append(Spec(case=c, samples=[t] * 3, extra={"cp": cp}))
        return write_run(tmp_path / "runs", specs, env)

    cp_run = cp_runs(model, slow={("ring_allgather", "forward"): 3.0})
    run_a = cp_runs(model, alone_scale=(3.0, 2.0))  # to calibrate on
    run_b = cp_runs(slower)  # what the calibrated model predicts
    report = check_run(cp_run, lambda W, rpn: model)
    errors = {(r.label, r.pass_): r.error for r in report.rows}
    assert errors[("ring_allgather", "forward")] == pytest.approx(1 / 3 - 1)
    assert all(abs(e) < 1e-9 for k, e in errors.items() if k != ("ring_allgather", "forward"))

    proc = run_cli("advise", "--check", str(cp_run.path), "--kernel-run", str(kernel_run.path), "--network", str(net_file),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["median_abs_error"] == pytest.approx(0.0, abs=1e-9) and len(data["cases"]) == 6
    [group] = data["groups"]
    assert group["mask"] == "full" and group["world_size"] == 4 and group["methods"] == 3

    common = ("--kernel-run", str(kernel_run.path), "--network", str(net_file), "--json")
    uncalibrated = json.loads(run_cli("advise", "--check", str(run_b.path), *common).stdout)
    assert uncalibrated["median_abs_error"] > 0.3 and uncalibrated["calibration"] is None
    proc = run_cli("advise", "--check", str(run_b.path), "--calibrate", str(run_a.path), *common)
    assert proc.returncode == 0, proc.stderr
    calibrated = json.loads(proc.stdout)
    assert calibrated["median_abs_error"] == pytest.approx(0.0, abs=1e-9)
    assert "compute x3.00, communication x2.00" in calibrated["calibration"]

    # two runs of one suite, checked against the median of their measurements (in this process)
    from attnbench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["attnbench", "advise", "--check", str(cp_run.path), "--check", str(run_a.path), *common])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code in (0, None)
    both = json.loads(capsys.readouterr().out)
    assert [r["median_abs_error"] for r in both["runs"]] == [pytest.approx(0.0, abs=1e-9)] * 2
    pooled_errors = {(c["label"], c["pass"]): c["error"] for c in both["cases"]}
    assert pooled_errors[("ring_allgather", "forward")] == pytest.approx(1 / 2 - 1)  # median of 3t and t: 2t
    assert both["run"] == f"{cp_run.info.run_id} + {run_a.info.run_id}"

    # README's example, as written there: shipped published profiles by default
    line = next(x for x in (ROOT / "README.md").read_text().splitlines() if x.startswith("attnbench advise --mask causal"))
    proc = run_cli(*shlex.split(line)[1:], "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["question"]["seqlen"], data["question"]["gpus"], data["question"]["gpus_per_node"]) == (1 << 20, 64, 8)
    ranked = [o for o in data["options"] if o["status"] == "ranked"]
    assert ranked and ranked[0]["rank"] == 1 and data["network"] == "h100-nvlink-ib400"
    assert {o["method"] for o in ranked} == set(MODELLED)
    assert {o["method"] for o in data["options"] if o["status"] == "not modelled"} == {"torch_cp"}
    assert data["compute"].startswith("published: FlashAttention-3")

    proc = run_cli("advise", "--mask", "causal", "--seqlen", "4K", "--gpus", "0")  # one in a real process
    assert proc.returncode == 2 and "--gpus" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    from attnbench.cli.app import main

    for args, message in [  # the rest through the same entry point, in this process (each process costs seconds)
        (("advise", "--mask", "causal", "--seqlen", "4K", "--network", str(tmp_path / "nope.json")), "not found"),
        (("advise", "--check", str(cp_run.path)), "--kernel-run"),
        (("advise", "--mask", "block_sparse", "--seqlen", "4K"), "dynamic"),
        (("netbench", "--sizes", "4X"), "message size"),
        (("advise", "--mask", "causal", "--seqlen", "4K", "--dtype", "fp7"), "--dtype: unknown dtype"),
        (("advise", "--mask", "causal", "--seqlen", "1000", "--gpus", "64"), "no CP method can run causal at 1000 tokens"),
        (("advise", "--mask", "causal_document", "--seqlen", "1024M"), "up to 64M tokens"),
        (("advise", "--mask", "causal", "--seqlen", "4K", "--calibrate", str(run_a.path)), "--calibrate goes with --check"),
        (("advise", "--check", str(run_a.path), "--calibrate", str(run_a.path), *common), "names a run being checked"),
        (("advise", "--check", str(run_a.path), "--check", str(run_a.path), *common), "twice"),
    ]:
        monkeypatch.setattr(sys, "argv", ["attnbench", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        err = capsys.readouterr().err
        assert exited.value.code == 2 and message in err and "Traceback" not in err, (args, err)


def test_readme_documents_every_option_of_advise_and_netbench():
    import typer

    from attnbench.cli.app import app

    readme = (ROOT / "README.md").read_text()
    commands = typer.main.get_command(app).commands
    for name in ("advise", "netbench"):
        assert f"attnbench {name}" in readme
        for param in commands[name].params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in readme, (name, opt)


def test_netbench_measures_a_gloo_world_and_writes_a_profile(tmp_path):
    from tests.helpers import run_cli

    out = tmp_path / "gloo.json"
    proc = run_cli("netbench", "--world-sizes", "2", "--sizes", "1K,256K", "--repeats", "3", "--ops", "p2p,all_gather",
                   "--out", str(out), "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    profile = NetworkProfile.model_validate_json(out.read_text())
    [section] = profile.sections
    assert section.world_size == 2 and profile.backend == "gloo"
    fits = section.links["intra"]
    assert set(fits) == {"p2p", "all_gather"}
    for fit in fits.values():
        assert len(fit.points) == 2 and fit.bandwidth_Bps > 0
        assert {p.bytes for p in fit.points} == {1024, 256 * 1024}  # what one rank sent, as counted
    assert profile.measured["command"].startswith("attnbench netbench")
    assert "world size 2" in proc.stdout


def test_netbench_on_two_nodes_measures_the_links_inside_and_across_them(tmp_path):
    """--nnodes 2 on one machine, 2 ranks per node: groups inside a node and groups with one
    rank per node are fitted separately ("intra", "inter"); node 0 writes the profile, node 1
    nothing."""
    import os
    import subprocess

    from tests.helpers import run_cli
    from tests.test_cp_launch import _free_port_range

    port = _free_port_range(5)
    common = ["netbench", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--world-sizes", "4",
              "--sizes", "1K,64K", "--repeats", "2", "--ops", "p2p,all_gather", "--timeout", "120"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    node1 = subprocess.Popen([sys.executable, "-m", "attnbench", *common, "--node-rank", "1", "--out",
                              str(tmp_path / "node1.json")], env=env, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node0 = run_cli(*common, "--node-rank", "0", "--out", str(tmp_path / "node0.json"), timeout=300)
    out1, err1 = node1.communicate(timeout=120)
    assert node0.returncode == 0, node0.stdout + node0.stderr
    assert node1.returncode == 0, out1 + err1
    assert not (tmp_path / "node1.json").exists()
    profile = NetworkProfile.model_validate_json((tmp_path / "node0.json").read_text())
    [section] = profile.sections
    assert (section.world_size, section.ranks_per_node) == (4, 2)
    assert set(section.links) == {"intra", "inter"}
    for link in section.links.values():
        assert set(link) == {"p2p", "all_gather"} and all(f.bandwidth_Bps > 0 for f in link.values())
