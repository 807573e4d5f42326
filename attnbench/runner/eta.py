"""Time left in a run: the predictions of the cases still to run, corrected by how the
finished ones compared with theirs.

The correction is the ratio of measured to predicted seconds over the finished cases,
started from 1 with the weight of :data:`PRIOR_FRACTION` of the whole prediction, so one
slow first case (a compilation, a loaded machine) does not swing the estimate. Cases
predicted to cost nothing (unsupported, skipped) count with what they took.

Items are the cases (a list of predictions, by index) or anything hashable (a mapping), such
as the visits of cases measured in rounds; an item that will not run after all (a case that
ended in an earlier round) is `dropped`.
"""

from __future__ import annotations

#: weight of the uncorrected prediction, as a fraction of the run's predicted seconds
PRIOR_FRACTION = 0.05


class Eta:
    def __init__(self, predicted, startup: float = 0.0) -> None:
        items = predicted.items() if isinstance(predicted, dict) else enumerate(predicted)
        self.predicted = {key: max(0.0, float(p)) for key, p in items}
        self.startup = max(0.0, float(startup))
        self.done: set = set()
        self.measured_s = 0.0  # finished cases, measured
        self.expected_s = 0.0  # finished cases, predicted
        self.total = self.startup + sum(self.predicted.values())
        self.prior = PRIOR_FRACTION * self.total

    @property
    def correction(self) -> float:
        """Measured / predicted seconds so far (1 before any case has finished)."""
        if self.prior + self.expected_s <= 0:
            return 1.0
        return (self.prior + self.measured_s) / (self.prior + self.expected_s)

    def finished(self, key, seconds: float) -> None:
        if key in self.done or key not in self.predicted:
            return
        self.done.add(key)
        self.measured_s += max(0.0, float(seconds))
        self.expected_s += self.predicted[key]

    def dropped(self, key) -> None:
        """`key` will not run: it leaves the time left, and the correction."""
        self.predicted.pop(key, None)

    def remaining_seconds(self) -> float:
        left = sum(p for key, p in self.predicted.items() if key not in self.done)
        return left * self.correction

    def total_seconds(self) -> float:
        """The whole run as predicted before it started (start-up included)."""
        return self.total
