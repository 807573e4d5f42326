"""`attnbench advise --check RUN`: predict every measured case of a CP run, compare.

Every ok CP record with a timing is predicted as it ran (method, parameters, mask, shape,
world size, ranks per node, the pass it timed), with the compute figures and network
profile given; predicted vs measured median per case, and the summary:

- the median absolute relative error of the case time, ``|predicted / measured - 1|``;
- per (mask, world size) group, whether the predicted fastest method (parameters included)
  is the measured fastest, on the sum of the passes measured for all of the group's methods
  (forward + backward: one training step's attention); the same per pass; and whether the
  two are the same plan under two names (usp and loongtrain at Ulysses degree 1 on a ring
  of 2 run ring_p2p's steps and transfers: the model gives them one time, and which of
  them a run measures faster is the run's noise);
- beside each group the measured margin between its two fastest methods: where it is
  inside the measurement's noise (W = 1, where every method is the same local call) no
  model can call the winner, and the table shows it; and what following the prediction
  cost (the predicted fastest's measured time over the fastest's), and whether the two
  are inside each other's measured p20-p80 range (the run cannot tell them apart).

Several runs of one suite (``--check A --check B``) are checked against the median of their
measurements per case (:func:`pooled`), with each run's own summary beside it.

With a calibration run (``--calibrate``), the two runs' measurements are also compared with
each other (:class:`RunAgreement`): how often the same suite, run twice on this machine,
finds the same fastest method, and how far apart its case times are: the ceiling of any
prediction here.

Records the model cannot predict (torch_cp: its collectives run inside DTensor) are listed
with the reason, never silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from attnbench.advise.candidates import label
from attnbench.advise.predict import Predictor, plan_identity


@dataclass
class CheckRow:
    label: str  # method and parameters as the suite gave them
    mask: str
    world_size: int
    pass_: str
    measured_s: float
    measured_p20_s: float
    measured_p80_s: float
    predicted_s: float
    measured_alone: Optional[dict] = None  # compute_s / communication_s, as the worker measured them
    predicted_alone: Optional[dict] = None
    overlaps: bool = False  # the method's transfers can run beside its steps (a ring)
    plan: tuple = ()  # what the plan does (attnbench.advise.predict.plan_identity), per pass-less case

    @property
    def error(self) -> float:
        return self.predicted_s / self.measured_s - 1.0


@dataclass
class GroupResult:
    mask: str
    world_size: int
    pass_: Optional[str]  # None: the sum of the passes
    measured_best: str
    predicted_best: str
    margin: float  # measured second-fastest / fastest - 1
    methods: int
    same_plan: bool = False  # the two are one plan under two names (usp at degree 1 and ring_p2p)
    #: what following the prediction costs: measured time of the predicted fastest / the fastest - 1
    #: (0 where the two are one plan: the model gives them one time)
    regret: float = 0.0
    #: the predicted fastest's measured p20-p80 range overlaps the fastest's: the run cannot tell them apart
    within_noise: bool = False

    @property
    def agree(self) -> bool:
        return self.measured_best == self.predicted_best

    @property
    def agree_plan(self) -> bool:
        """The predicted fastest plan is the measured fastest one, whatever each is called."""
        return self.agree or self.same_plan


@dataclass
class CheckReport:
    run_id: str
    compute_source: str
    network_source: str
    rows: list[CheckRow]
    groups: list[GroupResult]  # per (mask, world size), passes summed
    pass_groups: list[GroupResult]  # per (mask, world size, pass)
    not_predicted: list[tuple[str, str]] = field(default_factory=list)  # (case label, why)
    calibration: Optional[str] = None  # what scaled the predictions (attnbench.advise.calibrate)
    reference: Optional["RunAgreement"] = None  # the calibration run's measurements against this run's
    runs: list["CheckReport"] = field(default_factory=list)  # pooled (:func:`pooled`): each run's own check

    @property
    def median_abs_error(self) -> Optional[float]:
        return float(np.median([abs(r.error) for r in self.rows])) if self.rows else None

    @property
    def median_abs_error_by_world(self) -> dict[int, float]:
        by: dict[int, list[float]] = {}
        for r in self.rows:
            by.setdefault(r.world_size, []).append(abs(r.error))
        return {w: float(np.median(v)) for w, v in sorted(by.items())}

    @staticmethod
    def agreement(groups: list[GroupResult], *, by_plan: bool = False) -> Optional[float]:
        if not groups:
            return None
        return sum(g.agree_plan if by_plan else g.agree for g in groups) / len(groups)

    @staticmethod
    def within_noise(groups: list[GroupResult]) -> Optional[float]:
        """Share of groups whose predicted fastest is the measured fastest or measured inside
        its p20-p80 range (the run does not tell the two apart)."""
        if not groups:
            return None
        return sum(g.agree_plan or g.within_noise for g in groups) / len(groups)

    @staticmethod
    def regrets(groups: list[GroupResult]) -> Optional[tuple[float, float]]:
        """(median, largest) of what following the prediction cost over the groups."""
        if not groups:
            return None
        r = [g.regret for g in groups]
        return float(np.median(r)), float(max(r))


@dataclass
class RunAgreement:
    """Two runs of one suite measured against each other: the ceiling of any prediction of
    one from the other on this machine (a model cannot agree with a run more often, nor
    closer, than the run's own repetition does, except by luck)."""

    run_id: str  # the other run
    cases: int  # cases both measured
    median_abs_difference: Optional[float]  # median |this / other - 1| of the case times
    by_world: dict[int, float]  # the same per world size
    groups: int  # (mask, world size) groups both measured
    same_fastest: int  # groups whose measured fastest method is the same in both runs
    same_fastest_plan: int  # ... the same plan, whatever each run's fastest is called


def run_agreement(this: CheckReport, other: CheckReport) -> RunAgreement:
    mine = {(r.label, r.mask, r.world_size, r.pass_): r.measured_s for r in this.rows}
    pairs = [(r.world_size, mine[k] / r.measured_s - 1.0) for r in other.rows
             if (k := (r.label, r.mask, r.world_size, r.pass_)) in mine]
    ratios = [x for _, x in pairs]
    by_world: dict[int, list[float]] = {}
    for w, x in pairs:
        by_world.setdefault(w, []).append(abs(x))
    theirs = {(g.mask, g.world_size): g for g in other.groups}
    both = [(g, theirs[(g.mask, g.world_size)]) for g in this.groups if (g.mask, g.world_size) in theirs]
    plans = {(r.label, r.mask, r.world_size): r.plan for r in this.rows + other.rows}
    same = sum(a.measured_best == b.measured_best for a, b in both)
    same_plan = sum(plans[(a.measured_best, a.mask, a.world_size)] == plans[(b.measured_best, b.mask, b.world_size)]
                    for a, b in both)
    return RunAgreement(run_id=other.run_id, cases=len(ratios),
                        median_abs_difference=float(np.median(np.abs(ratios))) if ratios else None,
                        by_world={w: float(np.median(v)) for w, v in sorted(by_world.items())},
                        groups=len(both), same_fastest=same, same_fastest_plan=same_plan)


def pooled(reports: list[CheckReport]) -> CheckReport:
    """One suite measured several times, checked against the median of its runs: per case
    (method, mask, world size, pass) measured in every run, the median over the runs of its
    median, p20 and p80 and of its compute-only and communication-only times; the prediction
    is the same in every run. A run's noise (a disturbed case, a coin-flip between two plans
    within a few percent) moves one run's fastest method, less often the median's."""
    def key(r: CheckRow) -> tuple:
        return (r.label, r.mask, r.world_size, r.pass_)

    by_run = [{key(r): r for r in report.rows} for report in reports]
    common = [k for k in by_run[0] if all(k in rows for rows in by_run[1:])]
    rows = []
    for k in common:
        seen = [rows_of[k] for rows_of in by_run]
        alone = [r.measured_alone for r in seen]
        measured_alone = None
        if all(alone):
            measured_alone = {part: float(np.median([a.get(part) or 0.0 for a in alone]))
                              for part in ("compute_s", "communication_s")}
        first = seen[0]
        rows.append(CheckRow(
            label=first.label, mask=first.mask, world_size=first.world_size, pass_=first.pass_,
            measured_s=float(np.median([r.measured_s for r in seen])),
            measured_p20_s=float(np.median([r.measured_p20_s for r in seen])),
            measured_p80_s=float(np.median([r.measured_p80_s for r in seen])),
            predicted_s=first.predicted_s, measured_alone=measured_alone, predicted_alone=first.predicted_alone,
            overlaps=first.overlaps, plan=first.plan))
    skipped = list(dict.fromkeys(c for report in reports for c in report.not_predicted))
    head = reports[0]
    return CheckReport(run_id=" + ".join(r.run_id for r in reports), compute_source=head.compute_source,
                       network_source=head.network_source, rows=rows, groups=_groups(rows, by_pass=False),
                       pass_groups=_groups(rows, by_pass=True), not_predicted=skipped, calibration=head.calibration,
                       runs=list(reports))


def check_run(run, predictor_for, *, calibration=None) -> CheckReport:
    """``predictor_for(world_size, ranks_per_node)`` gives the Predictor of a case's cluster
    (``calibration``: the attnbench.advise.calibrate.Calibration it applies, for the report)."""
    from attnbench.cp import CP_METHODS
    from attnbench.masks import build_mask

    masks: dict = {}
    rows: list[CheckRow] = []
    skipped: list[tuple[str, str]] = []
    for record in run.records:
        case = record.case
        if case.cp is None or record.status.value != "ok" or record.timing is None:
            continue
        key = (case.mask.name, tuple(sorted(case.mask.params.items())), case.shape.seqlen)
        if key not in masks:
            masks[key] = build_mask(case.mask.name, case.shape.seqlen, case.mask.params)
        method = CP_METHODS.get(case.cp.method)
        W = case.cp.world_size
        predictor = predictor_for(W, case.cp.ranks_per_node or W)
        try:
            prediction = predictor.predict(case, masks[key], method, alone=True)
        except NotImplementedError as exc:
            skipped.append((case.label(), str(exc)))
            continue
        measured_alone = None
        if record.cp and record.cp.overlap:
            measured_alone = {"compute_s": record.cp.overlap.compute_s, "communication_s": record.cp.overlap.communication_s}
        predicted_alone = {k: sum(a[k] for a in prediction.alone.values()) for k in ("compute_s", "communication_s")}
        rows.append(CheckRow(
            label=label(case.cp.method, dict(case.cp.params)), mask=case.mask.label(), world_size=W,
            pass_=case.pass_.value, measured_s=record.timing.median_s, measured_p20_s=record.timing.p20_s,
            measured_p80_s=record.timing.p80_s, predicted_s=prediction.seconds,
            measured_alone=measured_alone, predicted_alone=predicted_alone, overlaps=prediction.overlaps,
            plan=plan_identity(method, case, masks[key]),
        ))
    return CheckReport(run_id=run.info.run_id, compute_source=predictor_for(1, 1).compute.source,
                       network_source=predictor_for(1, 1).network.name, rows=rows,
                       groups=_groups(rows, by_pass=False), pass_groups=_groups(rows, by_pass=True),
                       not_predicted=skipped, calibration=calibration.describe() if calibration else None)


def _groups(rows: list[CheckRow], *, by_pass: bool) -> list[GroupResult]:
    table: dict[tuple, dict[str, dict[str, CheckRow]]] = {}
    for r in rows:
        group = (r.mask, r.world_size, r.pass_ if by_pass else None)
        table.setdefault(group, {}).setdefault(r.label, {})[r.pass_] = r
    out = []
    for (mask, world, pass_), methods in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        passes = set.intersection(*(set(m) for m in methods.values()))
        complete = {name: m for name, m in methods.items() if passes and set(m) >= passes}
        if len(complete) < 2:
            continue
        measured = {n: sum(m[p].measured_s for p in passes) for n, m in complete.items()}
        low = {n: sum(m[p].measured_p20_s for p in passes) for n, m in complete.items()}
        high = {n: sum(m[p].measured_p80_s for p in passes) for n, m in complete.items()}
        predicted = {n: sum(m[p].predicted_s for p in passes) for n, m in complete.items()}
        order = sorted(measured, key=measured.get)
        best = min(predicted, key=predicted.get)
        plan_of = {n: next(iter(m.values())).plan for n, m in complete.items()}
        same_plan = plan_of[order[0]] == plan_of[best]
        out.append(GroupResult(mask=mask, world_size=world, pass_=pass_, measured_best=order[0], predicted_best=best,
                               margin=measured[order[1]] / measured[order[0]] - 1.0, methods=len(complete),
                               same_plan=same_plan,
                               regret=0.0 if same_plan else measured[best] / measured[order[0]] - 1.0,
                               within_noise=low[best] <= high[order[0]]))
    return out


def check_dict(report: CheckReport) -> dict:
    def group(g: GroupResult) -> dict:
        return {"mask": g.mask, "world_size": g.world_size, "pass": g.pass_, "measured_best": g.measured_best,
                "predicted_best": g.predicted_best, "agree": g.agree, "agree_plan": g.agree_plan, "margin": g.margin,
                "methods": g.methods, "regret": g.regret, "within_noise": g.within_noise}

    return {
        "run": report.run_id, "compute": report.compute_source, "network": report.network_source,
        "calibration": report.calibration,
        "median_abs_error": report.median_abs_error,
        "median_abs_error_by_world": report.median_abs_error_by_world,
        "fastest_agreement": CheckReport.agreement(report.groups),
        "fastest_agreement_per_pass": CheckReport.agreement(report.pass_groups),
        "fastest_plan_agreement": CheckReport.agreement(report.groups, by_plan=True),
        "fastest_within_noise": CheckReport.within_noise(report.groups),
        "regret_median_max": CheckReport.regrets(report.groups),
        "cases": [{"label": r.label, "mask": r.mask, "world_size": r.world_size, "pass": r.pass_,
                   "measured_s": r.measured_s, "measured_p20_s": r.measured_p20_s, "measured_p80_s": r.measured_p80_s,
                   "predicted_s": r.predicted_s, "error": r.error, "measured_alone": r.measured_alone,
                   "predicted_alone": r.predicted_alone} for r in report.rows],
        "groups": [group(g) for g in report.groups],
        "pass_groups": [group(g) for g in report.pass_groups],
        "not_predicted": [{"case": c, "reason": why} for c, why in report.not_predicted],
        "reference": asdict(report.reference) if report.reference else None,
        "runs": [{"run": r.run_id, "cases": len(r.rows), "median_abs_error": r.median_abs_error,
                  "fastest_agreement": CheckReport.agreement(r.groups),
                  "fastest_plan_agreement": CheckReport.agreement(r.groups, by_plan=True),
                  "fastest_within_noise": CheckReport.within_noise(r.groups)} for r in report.runs],
    }
