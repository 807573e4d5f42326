"""Calibration of the model from another CP run on the same machine: per world size, how
much slower the run's compute-only and communication-only iterations were than predicted.

The kernel run and netbench are each measured alone; a CP run's ranks share the machine
with each other (and on a shared machine with whatever else runs there), so its local
steps and its transfers can be slower than either measurement says. The CP worker times
every case twice more (communication switched off; kernel switched off); per world size,
the median over the run's cases of measured / predicted is the factor the predictions of
that world size are scaled by (compute steps by one, collectives and transfers by the
other). And the overlap a ring achieved: of its measured time, compute only and
communication only, ``hidden = (compute + communication - total) / min(compute,
communication)`` (the netbench definition), the median over the run's ring cases of that
world size, replaces the profile's. Fit it on one run and check on another (`attnbench advise --check B --calibrate
A`): checking a run with its own calibration would grade the model on its own fit.

A world size the calibration run did not measure is predicted unscaled (factor 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Calibration:
    run_id: str
    compute: dict[int, float] = field(default_factory=dict)  # world size -> factor
    communication: dict[int, float] = field(default_factory=dict)
    cases: dict[int, int] = field(default_factory=dict)  # world size -> cases it came from
    overlap: dict[int, float] = field(default_factory=dict)  # world size -> share hidden (rings)

    def compute_factor(self, world: int) -> float:
        return self.compute.get(world, 1.0)

    def communication_factor(self, world: int) -> float:
        return self.communication.get(world, 1.0)

    def overlap_of(self, world: int):
        """The share of a ring's transfers hidden at this world size (None: not measured)."""
        return self.overlap.get(world)

    def describe(self) -> str:
        parts = [f"W={w}: compute x{self.compute_factor(w):.2f}, communication x{self.communication_factor(w):.2f}"
                 + (f", ring overlap {100 * self.overlap[w]:.0f}% hidden" if w in self.overlap else "")
                 + f" ({self.cases[w]} cases)" for w in sorted(self.cases)]
        return f"calibrated on run {self.run_id}: " + "; ".join(parts)


def calibration_from(report) -> Calibration:
    """The factors from a check of the calibration run (attnbench.advise.check.CheckReport,
    predicted without calibration): rows with both alone figures measured and predicted."""
    ratios: dict[int, dict[str, list[float]]] = {}
    hidden: dict[int, list[float]] = {}
    for row in report.rows:
        measured, predicted = row.measured_alone, row.predicted_alone
        if not measured or not predicted:
            continue
        comp, comm = measured.get("compute_s") or 0.0, measured.get("communication_s") or 0.0
        if row.overlaps and row.world_size > 1 and min(comp, comm) > 0:
            share = (comp + comm - row.measured_s) / min(comp, comm)
            hidden.setdefault(row.world_size, []).append(min(1.0, max(-10.0, share)))
        per = ratios.setdefault(row.world_size, {"compute": [], "communication": []})
        for part in ("compute", "communication"):
            m, p = measured.get(f"{part}_s"), predicted.get(f"{part}_s")
            if m and p and m > 0 and p > 0:
                per[part].append(m / p)
    compute = {w: float(np.median(r["compute"])) for w, r in ratios.items() if r["compute"]}
    communication = {w: float(np.median(r["communication"])) for w, r in ratios.items() if r["communication"]}
    cases = {w: max(len(r["compute"]), len(r["communication"])) for w, r in ratios.items()}
    overlap = {w: float(np.median(v)) for w, v in hidden.items() if v}
    return Calibration(run_id=report.run_id, compute=compute, communication=communication, cases=cases, overlap=overlap)
