"""Ranks sharing a node's CPU cores: how long each rank's local step takes when it competes.

On a CPU node with more ranks than cores, the operating system shares the cores among the
ranks that have work (processor sharing). A rank whose step is empty (the mask leaves that
ring step without a pair: the step calls no kernel) takes no core, so the others run
faster: with 4 ranks on 2 cores, a causal mask split contiguously keeps 4, 3, 2 and then 1
rank busy over its 4 ring steps, not 4 throughout. Charging every rank ``ranks / cores``
times its step, as if all were always busy, over-prices exactly the plans whose ranks idle.

:func:`share_cores` plays out one round of concurrent steps: every rank of a node starts
together (the ring's transfers line the ranks up at each step) and progresses at
``min(1, cores / busy)`` of a core while ``busy`` ranks of its node still have work; a rank
that finishes hands its share to the rest. Exact for that model (water-filling over the
ranks ordered by their work), O(ranks log ranks) per step.
"""

from __future__ import annotations

import numpy as np


def share_cores(work: np.ndarray, cores: int, ranks_per_node: int) -> np.ndarray:
    """``work[rank, k]``: seconds of rank's k-th step on a core of its own; returns the seconds
    each step takes when the ranks of a node (``rank // ranks_per_node``) run their k-th steps
    at once on ``cores`` cores. Works of 0 stay 0."""
    work = np.asarray(work, dtype=float)
    out = np.zeros_like(work)
    if work.ndim == 1:
        return share_cores(work[:, None], cores, ranks_per_node)[:, 0]
    world = work.shape[0]
    for start in range(0, world, ranks_per_node):
        node = slice(start, min(world, start + ranks_per_node))
        for k in range(work.shape[1]):
            out[node, k] = _water_fill(work[node, k], cores)
    return out


def _water_fill(work: np.ndarray, cores: int) -> np.ndarray:
    """Finish times of jobs started together on ``cores`` shared fairly (one core at most each)."""
    done = np.zeros_like(work)
    order = np.argsort(work, kind="stable")
    now = 0.0
    progress = 0.0  # work every unfinished job has done so far
    busy = int(np.count_nonzero(work > 0))
    for index in order:
        w = work[index]
        if w <= 0:
            continue
        rate = min(1.0, cores / busy)  # of a core, for each busy job
        now += (w - progress) / rate
        progress = w
        done[index] = now
        busy -= 1
    return done
