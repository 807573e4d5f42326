"""Test-only plugin that plants a known slowdown in a built-in kernel (loaded via ATTNBENCH_PLUGINS).

With ATTNBENCH_TEST_SLOW_KERNEL=naive and ATTNBENCH_TEST_SLEEP_S=0.002, every call of the
`naive` kernel's timed closure sleeps 2 ms first. With ATTNBENCH_TEST_SLOW_FACTOR=0.25 instead,
every call spins after its work for a quarter of the CPU time the work took (the calling
thread's, time.thread_time): 25% slower in CPU time whatever the load, at least that in wall time. ATTNBENCH_TEST_SLOW_MASK=causal limits either to one mask. The
kernel keeps its name, so its cases keep their keys and `attnbench compare` matches them with
a run made without the plugin.
"""

import functools
import os
import time

from attnbench.kernels import KERNELS

KERNEL_ENV = "ATTNBENCH_TEST_SLOW_KERNEL"
SLEEP_ENV = "ATTNBENCH_TEST_SLEEP_S"
FACTOR_ENV = "ATTNBENCH_TEST_SLOW_FACTOR"
MASK_ENV = "ATTNBENCH_TEST_SLOW_MASK"


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _slowed(prepare, pause: float, factor: float, mask_name: str | None):
    @functools.wraps(prepare)
    def slow_prepare(inputs, mask):
        run = prepare(inputs, mask)
        if mask_name and mask.name != mask_name:
            return run

        def slow_run():
            if pause:
                time.sleep(pause)
            start = time.thread_time()
            result = run()
            if factor:
                _spin(factor * (time.thread_time() - start))
            return result

        return slow_run

    return slow_prepare


_name = os.environ.get(KERNEL_ENV)
_pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
_factor = float(os.environ.get(FACTOR_ENV, "0") or 0)
if _name:
    # wrapped even with no slowdown asked: a side by side with the slowdown switched off on one
    # side (compare --confirm --base-env) then differs only in the slowdown, not in when the
    # kernel was made or what wraps it
    _kernel = KERNELS.get(_name)  # the registry's one instance of that kernel
    _kernel.prepare = _slowed(_kernel.prepare, _pause, _factor, os.environ.get(MASK_ENV) or None)
