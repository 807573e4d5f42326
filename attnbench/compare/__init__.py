"""Compare two runs: per case the ratio of medians, significance on the raw samples, a state.

Public API:
    compare_runs(base, current, threshold=0.05, allow_env_change=False) -> Comparison
    nothing_to_compare(base, current) -> why not at all (same run, no case in common), or None
    State, Comparison, CaseComparison
    render: print_comparison (rich), to_markdown, to_json
Reads records only; never imports a kernel.
"""

from attnbench.compare.core import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    FAIL_ON,
    CaseComparison,
    Comparison,
    State,
    compare_runs,
    nothing_to_compare,
    significance,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_THRESHOLD",
    "FAIL_ON",
    "CaseComparison",
    "Comparison",
    "State",
    "compare_runs",
    "nothing_to_compare",
    "significance",
]
