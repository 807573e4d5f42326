"""Time left in a run: the predictions of the cases still to run, corrected by how the
finished ones compared with theirs.

The correction is the ratio of measured to predicted seconds over the finished cases,
started from 1 with the weight of :data:`PRIOR_FRACTION` of the whole prediction, so one
slow first case (a compilation, a loaded machine) does not swing the estimate. Cases
predicted to cost nothing (unsupported, skipped) count with what they took.
"""

from __future__ import annotations

#: weight of the uncorrected prediction, as a fraction of the run's predicted seconds
PRIOR_FRACTION = 0.05


class Eta:
    def __init__(self, predicted: list[float], startup: float = 0.0) -> None:
        self.predicted = [max(0.0, float(p)) for p in predicted]
        self.startup = max(0.0, float(startup))
        self.done: set[int] = set()
        self.measured_s = 0.0  # finished cases, measured
        self.expected_s = 0.0  # finished cases, predicted
        self.prior = PRIOR_FRACTION * (sum(self.predicted) + self.startup)

    @property
    def correction(self) -> float:
        """Measured / predicted seconds so far (1 before any case has finished)."""
        if self.prior + self.expected_s <= 0:
            return 1.0
        return (self.prior + self.measured_s) / (self.prior + self.expected_s)

    def finished(self, index: int, seconds: float) -> None:
        if index in self.done or not 0 <= index < len(self.predicted):
            return
        self.done.add(index)
        self.measured_s += max(0.0, float(seconds))
        self.expected_s += self.predicted[index]

    def remaining_seconds(self) -> float:
        left = sum(p for i, p in enumerate(self.predicted) if i not in self.done)
        return left * self.correction

    def total_seconds(self) -> float:
        """The whole run as predicted before it started (start-up included)."""
        return self.startup + sum(self.predicted)
