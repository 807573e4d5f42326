"""Predict one CP case: its plan, its steps' exact areas, their compute, the simulated passes.

For a case (method, parameters, mask, shape, world size) the method's own plan gives the
token layout; the mask's exact pair areas between ring positions (attnbench.cp.slices.
pair_areas) give every rank's work at every step of the method's schedule
(``step_sources``), which the compute model prices; the schedule's collectives and rings
are priced by the network model and played out by attnbench.advise.timeline. Imbalance
and exposed communication are outputs of that, not inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from attnbench.advise.calibrate import Calibration
from attnbench.advise.compute import ComputeModel
from attnbench.advise.cores import share_cores
from attnbench.advise.memory import KernelMemory, peak_bytes
from attnbench.advise.network import NetworkProfile
from attnbench.advise.timeline import PassTimeline, simulate
from attnbench.cases import Case
from attnbench.cp.slices import pair_areas, runs_length


@dataclass
class PassCost:
    """One pass on the slowest rank, and what it is made of."""

    seconds: float  # the slowest rank's end
    compute_s: float  # the slowest-computing rank's local steps
    mean_compute_s: float  # the ranks' mean: the balanced ideal
    communication_s: float  # the most any rank spent communicating (collectives + transfers)
    exposed_s: float  # seconds - compute_s: communication not hidden behind compute
    bytes_sent: int  # per rank (the schedule's, = the method's analytic bytes)

    @property
    def imbalance(self) -> float:
        return self.compute_s / self.mean_compute_s if self.mean_compute_s > 0 else 1.0

    @property
    def hidden(self) -> Optional[float]:
        """Share of the communication hidden behind compute (None when nothing is sent)."""
        if self.communication_s <= 0:
            return None
        return float(min(1.0, max(0.0, 1.0 - self.exposed_s / self.communication_s)))

    @classmethod
    def of(cls, timeline: PassTimeline, bytes_sent: int) -> "PassCost":
        compute = float(timeline.compute_s.max())
        total = timeline.seconds
        return cls(seconds=total, compute_s=compute, mean_compute_s=float(timeline.compute_s.mean()),
                   communication_s=float(timeline.communication_s.max()), exposed_s=max(0.0, total - compute),
                   bytes_sent=bytes_sent)


@dataclass
class CasePrediction:
    case: Case
    plan: dict  # the resolved split (defaults applied)
    passes: dict[str, PassCost]  # "forward" and/or "backward", as the case's pass times them
    peak_bytes: int  # estimated, the largest rank, over the passes
    alone: dict[str, dict[str, float]] = field(default_factory=dict)  # pass -> compute only / communication only
    overlaps: bool = False  # transfers can run beside its steps (a ring); else every collective blocks

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.passes.values())


def timed_passes(case: Case) -> tuple[str, ...]:
    """The passes the CP worker times for ``case`` (backward alone after an untimed forward)."""
    return {"forward": ("forward",), "backward": ("backward",), "forward_backward": ("forward", "backward")}[case.pass_.value]


def plan_identity(method, case: Case, mask) -> tuple:
    """What a plan does, whatever the method is called: its schedule, token split and steps
    (usp at Ulysses degree 1 is ring_p2p: the model cannot tell them apart, nor can a run)."""
    plan = method.plan(case, mask)
    steps = tuple(method.step_sources(case, plan, rank) for rank in range(case.cp.world_size))
    schedule = method.schedule(case, plan)
    # a ring level of one position sends nothing and adds no step: loongtrain's double ring
    # of 2 x 1 is ring_p2p's ring of 2
    schedule = replace(schedule, rings=tuple(r for r in schedule.rings if r.size > 1))
    return (schedule, plan.ring.strategy, plan.ulysses, steps)


class Predictor:
    """Predicts cases on one cluster: compute figures, network profile, ranks per node."""

    def __init__(self, compute: ComputeModel, network: NetworkProfile, ranks_per_node: int,
                 calibration: Optional[Calibration] = None) -> None:
        self.compute = compute
        self.network = network
        self.ranks_per_node = ranks_per_node
        self.calibration = calibration
        self._areas: dict = {}  # (mask id, layout strategy, world) -> pair areas

    def _pair_areas(self, mask, ring) -> np.ndarray:
        key = (id(mask), ring.strategy, ring.world)
        if key not in self._areas:
            self._areas[key] = pair_areas(mask.slices, ring.runs)
        return self._areas[key]

    def predict(self, case: Case, mask, method, *, alone: bool = False) -> CasePrediction:
        """``case`` must be supported (``method.unsupported_reason(case)`` is None); with
        ``alone`` also the compute-only and communication-only times the worker measures."""
        plan = method.plan(case, mask)
        schedule = method.schedule(case, plan)
        W = case.cp.world_size
        ring = plan.ring
        areas = self._pair_areas(mask, ring)
        lengths = np.array([runs_length(r) for r in ring.runs])
        sources = [method.step_sources(case, plan, rank) for rank in range(W)]
        group = np.array([rank // plan.ulysses for rank in range(W)])
        area = np.array([[areas[group[r], list(src)].sum() for src in sources[r]] for r in range(W)], dtype=float)
        k_len = np.array([[lengths[list(src)].sum() for src in sources[r]] for r in range(W)], dtype=float)
        q_len = np.broadcast_to(lengths[group][:, None], area.shape).astype(float)
        expected = method.expected_comm(case)
        passes, peaks, alone_s = {}, [], {}
        for name in timed_passes(case):
            work = self.compute.seconds(
                case.kernel, case.dtype, name, mask, batch=case.shape.batch, heads_q=schedule.heads_q,
                head_dim=case.shape.head_dim, area=area, q_len=q_len, k_len=k_len,
                path="ring" if schedule.rings else "call")
            work = np.asarray(work, dtype=float).reshape(area.shape)
            steps = self._contended(work, W)
            timeline = self._simulate(schedule, name, steps, W)
            passes[name] = PassCost.of(timeline, int(expected.get(name, (0, 0))[0]))
            peaks.append(peak_bytes(case, schedule, name, ring_tokens=int(lengths[0]), q_len=q_len[0], k_len=k_len[0],
                                    kernel=KernelMemory.of(case.kernel)))
            if alone:  # the worker's compute-only loop: no transfers line the ranks up between steps
                compute_only = float(self._contended(work.sum(axis=1, keepdims=True), W).max())
                comm_only = self._simulate(schedule, name, np.zeros_like(steps), W).seconds
                alone_s[name] = {"compute_s": compute_only, "communication_s": comm_only}
        return CasePrediction(case=case, plan=plan.describe(), passes=passes, peak_bytes=max(peaks), alone=alone_s,
                              overlaps=bool(schedule.rings))

    def _contended(self, work: np.ndarray, world: int) -> np.ndarray:
        """Seconds of every rank's steps (``work``: each alone on its device) as the ranks of a
        node run them together: on a CPU with more ranks than cores, the cores shared by the
        ranks that have work at that step (attnbench.advise.cores); a slowdown netbench
        measured with every rank busy scales that by what the core count does not explain
        (memory bandwidth), and a calibration by what the calibration run measured."""
        rpn = min(self.ranks_per_node, world)
        cores = self.compute.cores if self.compute.device == "cpu" else None
        measured = self.network.compute_slowdown(world)
        factor = self.calibration.compute_factor(world) if self.calibration else 1.0
        if cores and rpn > cores:
            excess = measured / (rpn / cores) if measured is not None else 1.0
            return factor * np.maximum(work, excess * share_cores(work, cores, rpn))
        return factor * (measured if measured is not None else 1.0) * work

    def _simulate(self, schedule, pass_name: str, steps: np.ndarray, world: int) -> PassTimeline:
        rpn = self.ranks_per_node
        net = self.network
        scale = self.calibration.communication_factor(world) if self.calibration else 1.0

        def collective(op, nbytes, members):
            return scale * net.seconds(op, nbytes, members, rpn, world)

        def transfer(nbytes, dst, ring_size):
            ranks = np.arange(len(dst))
            out = np.zeros(len(dst))
            for spans in (False, True):
                pick = ((ranks // rpn) != (dst // rpn)) == spans
                if pick.any():  # every rank of the ring exchanges at once, as netbench's p2p rings do
                    out[pick] = scale * net.link(world, spans, "p2p").seconds("p2p", nbytes, ring_size)
            out[dst == ranks] = 0.0  # a ring of one position sends nothing
            return out

        overlap = self.calibration.overlap_of(world) if self.calibration else None
        return simulate(schedule, pass_name, steps, collective=collective, transfer=transfer,
                        overlap=net.overlap(world) if overlap is None else overlap)
