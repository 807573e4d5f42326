"""Test-only plugin that plants a known slowdown in a built-in kernel (loaded via ATTNBENCH_PLUGINS).

With ATTNBENCH_TEST_SLOW_KERNEL=naive and ATTNBENCH_TEST_SLEEP_S=0.002, every call of the
`naive` kernel's timed closure sleeps 2 ms first. With ATTNBENCH_TEST_SLOW_FACTOR=0.25 instead,
every call spins after its work for a quarter of the time the work took: 25% slower whatever
the load of the machine. ATTNBENCH_TEST_SLOW_MASK=causal limits either to one mask. The
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
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _slowed(prepare, pause: float, factor: float, mask_name: str | None):
    @functools.wraps(prepare)
    def slow_prepare(inputs, mask):
        run = prepare(inputs, mask)
        if mask_name and mask.name != mask_name:
            return run

        def slow_run():
            start = time.perf_counter()
            if pause:
                time.sleep(pause)
            result = run()
            if factor:
                _spin(factor * (time.perf_counter() - start))
            return result

        return slow_run

    return slow_prepare


_name = os.environ.get(KERNEL_ENV)
_pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
_factor = float(os.environ.get(FACTOR_ENV, "0") or 0)
if _name and (_pause > 0 or _factor > 0):
    _kernel = KERNELS.get(_name)  # the registry's one instance of that kernel
    _kernel.prepare = _slowed(_kernel.prepare, _pause, _factor, os.environ.get(MASK_ENV) or None)
