"""Timing of a zero-argument closure.

The design follows ``triton.testing.do_bench`` (one pair of CUDA events per iteration,
the L2 cache flushed before every iteration, warm-up and repeat counts derived from a
time budget) and tritonbench (the harness times a closure; the kernel adapter decides
what the closure does).

Protocol of :func:`time_fn`:

1. one first call (it may compile or autotune), untimed;
2. a few iterations to estimate the cost of one iteration (wall clock of setup, L2
   flush and ``fn`` together, since that is what the case spends);
3. ``warmup = ceil(budget.warmup_seconds / estimate)`` warm-up iterations;
4. ``repeats = ceil(budget.measure_seconds / estimate)`` clamped to
   ``[budget.min_repeats, budget.max_repeats]`` timed iterations, every sample kept.

Only ``fn`` is inside the timed region. ``setup`` (if given) runs untimed before every
iteration, warm-up ones included, and its return value is passed to ``fn``.

A :class:`SpotCheck` passed to :func:`time_fn` keeps what ``fn`` returned on one timed
iteration, chosen at random once the repeat count is known, so that the caller can check
the outputs of a timed call too: a kernel cannot tell which of its calls will be looked at.

Rounds (``rounds`` > 1): the repeats planned in step 4 are the case's total over several
visits (runner.rounds); this call times the first share (:func:`split_repeats`) and says the
whole plan in ``Samples.planned``. A later visit passes ``iterations`` (its warm-up and its
share of the repeats): no estimate then, the plan stays the first visit's.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from attnbench.cases import Budget
from attnbench.measure.device import resolve_device

#: Upper bound on warm-up iterations (the time budget bounds them anyway; this only
#: protects against an absurd estimate for a near-empty closure).
MAX_WARMUP = 10_000
#: Iterations used to estimate the per-iteration time (fewer when they are slow).
ESTIMATE_ITERATIONS = 5
#: L2 flush buffer when the device does not report its L2 size.
FALLBACK_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Iterations:
    """Warm-up and timed iterations of one measurement."""

    warmup: int
    repeats: int


def split_repeats(total: int, rounds: int) -> list[int]:
    """`total` repeats over at most `rounds` visits, as evenly as can be, at least one each."""
    rounds = max(1, min(int(rounds), int(total)))
    share, extra = divmod(int(total), rounds)
    return [share + (1 if i < extra else 0) for i in range(rounds)]


def later_warmup(first_warmup: int, rounds: int) -> int:
    """Warm-up iterations of a visit after the first: a share of the first's, at least one
    (the machine is warm from the case before; the kernel was just prepared again)."""
    return max(1, math.ceil(first_warmup / max(1, rounds)))


@dataclass
class Samples:
    """Every timed sample of one measurement, in seconds."""

    times_s: list[float]
    warmup: int
    method: str  # "cuda_event" or "perf_counter"
    #: the whole plan when this was a first visit of several (repeats: the total over the rounds)
    planned: Iterations | None = None
    #: CPU only: the timing thread's CPU time of each sample (time.thread_time): with one torch
    #: thread, the time the work ran, without the time it waited for a core (compare uses it)
    cpu_times_s: list[float] | None = None

    def _percentile(self, q: float) -> float:
        if not self.times_s:
            return float("nan")
        return float(np.percentile(np.asarray(self.times_s, dtype=np.float64), q, method="linear"))

    @property
    def median_s(self) -> float:
        return self._percentile(50)

    @property
    def p20_s(self) -> float:
        return self._percentile(20)

    @property
    def p80_s(self) -> float:
        return self._percentile(80)

    @property
    def repeats(self) -> int:
        return len(self.times_s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("planned")
        d.pop("cpu_times_s")
        d["times_s"] = [float(t) for t in self.times_s]
        d.update(repeats=self.repeats, median_s=self.median_s, p20_s=self.p20_s, p80_s=self.p80_s)
        return d


class SpotCheck:
    """Keeps the result of one timed iteration, picked at random (the kernel cannot predict it)."""

    _rng = random.SystemRandom()

    def __init__(self) -> None:
        self.index: int | None = None
        self.result: Any = None

    def plan(self, repeats: int) -> None:
        self.index = self._rng.randrange(repeats) if repeats > 0 else None
        self.result = None

    def offer(self, index: int, result: Any) -> None:
        if index == self.index:
            self.result = result


def _ceil_ratio(seconds: float, est: float) -> int:
    # ceil that ignores float noise (0.07 / 0.01 == 7.000000000000001 means 7)
    return math.ceil(seconds / est * (1 - 1e-9))


def plan_iterations(estimate_s: float, budget: Budget) -> tuple[int, int]:
    """(warm-up count, repeat count) for one iteration costing ``estimate_s`` seconds."""
    est = max(float(estimate_s), 1e-9)
    if budget.warmup_seconds <= 0:
        warmup = 0
    else:
        warmup = min(MAX_WARMUP, max(1, _ceil_ratio(budget.warmup_seconds, est)))
    repeats = _ceil_ratio(budget.measure_seconds, est)
    lo, hi = budget.min_repeats, max(budget.min_repeats, budget.max_repeats)
    repeats = int(min(max(repeats, lo), hi))
    return int(warmup), repeats


def estimate_iteration_seconds(
    iteration: Callable[[], Any],
    *,
    sync: Callable[[], None] | None = None,
    n: int = ESTIMATE_ITERATIONS,
    max_seconds: float = 0.1,
) -> float:
    """Mean wall-clock seconds of ``iteration()``.

    Runs up to ``n`` iterations (at least one), stopping early once ``max_seconds``
    have been spent. ``sync`` (e.g. ``torch.cuda.synchronize``) is called before the
    clock starts and before it is read, so queued device work is included.
    """
    sync = sync or (lambda: None)
    sync()
    t0 = time.perf_counter()
    count = 0
    while True:
        iteration()
        count += 1
        if count >= n:
            break
        sync()
        if time.perf_counter() - t0 >= max_seconds:
            break
    sync()
    return (time.perf_counter() - t0) / count


def l2_flush_bytes(dev: torch.device) -> int:
    """Size of the buffer zeroed to flush L2: twice the L2 size (fallback 256 MiB)."""
    try:
        l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 0)
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        l2 = 0
    return 2 * l2 if l2 > 0 else FALLBACK_FLUSH_BYTES


def time_fn(
    fn: Callable[..., Any],
    *,
    device: str | torch.device,
    budget: Budget,
    setup: Callable[[], Any] | None = None,
    flush_l2: bool = True,
    first_call: bool = True,
    spot_check: SpotCheck | None = None,
    iterations: Iterations | None = None,
    rounds: int = 1,
) -> Samples:
    """Time ``fn`` on ``device`` under ``budget`` (see the module docstring).

    ``first_call=False`` skips the untimed first call (compilation, lazy initialisation)
    when the caller has already run ``fn`` once, e.g. to check its accuracy.
    ``spot_check`` receives the result of one timed iteration (see :class:`SpotCheck`).
    ``iterations`` fixes warm-up and repeats (no estimate); else they are planned from the
    budget and, with ``rounds`` > 1, this call times the first round's share of the repeats.
    """
    dev = resolve_device(device)
    spot_check = spot_check or SpotCheck()

    def plan(estimate_s: float) -> tuple[Iterations, Iterations | None]:
        """(what this call runs, the whole plan when it is a share of one)."""
        if iterations is not None:
            return iterations, None
        warmup, repeats = plan_iterations(estimate_s, budget)
        whole = Iterations(warmup, repeats)
        return Iterations(warmup, split_repeats(repeats, rounds)[0]), whole

    if dev.type == "cuda":
        return _time_cuda(fn, dev, budget, setup, flush_l2, first_call, spot_check, plan, iterations is None)
    return _time_cpu(fn, budget, setup, first_call, spot_check, plan, iterations is None)


def _estimate_limit(budget: Budget) -> float:
    # Spend at most a tenth of the case's measuring budget on the estimate
    # (but always at least one iteration).
    return 0.1 * (budget.warmup_seconds + budget.measure_seconds)


def _time_cpu(fn, budget: Budget, setup, first_call: bool, spot_check: SpotCheck, plan, estimate: bool) -> Samples:
    def iteration():
        if setup is not None:
            fn(setup())
        else:
            fn()

    if first_call:
        iteration()  # may compile
    est = estimate_iteration_seconds(iteration, max_seconds=_estimate_limit(budget)) if estimate else 0.0
    now, planned = plan(est)
    warmup, repeats = now.warmup, now.repeats
    for _ in range(warmup):
        iteration()

    times: list[float] = []
    cpu_times: list[float] = []
    perf, cpu = time.perf_counter, time.thread_time
    spot_check.plan(repeats)
    for i in range(repeats):
        if setup is not None:
            arg = setup()
            c0, t0 = cpu(), perf()
            result = fn(arg)
            t1, c1 = perf(), cpu()
        else:
            c0, t0 = cpu(), perf()
            result = fn()
            t1, c1 = perf(), cpu()
        times.append(t1 - t0)
        cpu_times.append(c1 - c0)
        spot_check.offer(i, result)
        result = None  # freed before the next iteration, as an unkept result always was
    return Samples(times_s=times, warmup=warmup, method="perf_counter", planned=planned, cpu_times_s=cpu_times)


def _time_cuda(fn, dev: torch.device, budget: Budget, setup, flush_l2: bool, first_call: bool,
               spot_check: SpotCheck, plan, estimate: bool) -> Samples:
    with torch.cuda.device(dev):
        cache = None
        if flush_l2:
            cache = torch.empty(l2_flush_bytes(dev), dtype=torch.int8, device=dev)

        def sync():
            torch.cuda.synchronize(dev)

        def prepare():
            arg = setup() if setup is not None else None
            if cache is not None:
                cache.zero_()
            return arg

        def call(arg):
            return fn(arg) if setup is not None else fn()

        def iteration():
            call(prepare())

        if first_call:
            iteration()  # may compile
        sync()
        est = estimate_iteration_seconds(iteration, sync=sync, max_seconds=_estimate_limit(budget)) if estimate else 0.0
        now, planned = plan(est)
        warmup, repeats = now.warmup, now.repeats
        for _ in range(warmup):
            iteration()

        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        spot_check.plan(repeats)
        for i in range(repeats):
            arg = prepare()  # setup and L2 flush stay outside the events
            starts[i].record()
            result = call(arg)
            ends[i].record()
            spot_check.offer(i, result)
            result = None
        sync()
        times = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
        cache = None  # release the flush buffer
    return Samples(times_s=times, warmup=warmup, method="cuda_event", planned=planned)
