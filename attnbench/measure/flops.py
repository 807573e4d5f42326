"""FLOP convention of masks.md: one for every kernel and every context-parallel method.

forward = 4 * batch * heads_q * head_dim * area (area per head: allowed (query, key)
pairs; for per-head masks the total over heads divided by the head count). GQA does not
reduce it. backward = 2.5 x forward, forward+backward = 3.5 x forward
(``Pass.flop_factor``). These are useful FLOPs: masked-out work is never counted.
"""

from __future__ import annotations

import math

from attnbench.cases import Pass


def attention_flops(*, batch: int, heads_q: int, head_dim: int, area: float, pass_: Pass | str) -> float:
    """Useful FLOPs of one attention call under the masks.md convention."""
    if batch < 0 or heads_q < 0 or head_dim < 0 or area < 0:
        raise ValueError("batch, heads_q, head_dim and area must be non-negative")
    return 4.0 * batch * heads_q * head_dim * float(area) * Pass(pass_).flop_factor


def tflops_per_second(flops: float, seconds: float) -> float | None:
    """FLOPs / seconds / 1e12; None when the time is not a positive finite number."""
    if flops is None or seconds is None:
        return None
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds <= 0 or not math.isfinite(float(flops)):
        return None
    return float(flops) / seconds / 1e12
