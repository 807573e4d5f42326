"""Test-only plugin that plants a known slowdown in a built-in kernel (loaded via ATTNBENCH_PLUGINS).

With ATTNBENCH_TEST_SLOW_KERNEL=naive and ATTNBENCH_TEST_SLEEP_S=0.002, every call of the
`naive` kernel's timed closure sleeps 2 ms first. The kernel keeps its name, so its cases keep
their keys and `attnbench compare` matches them with a run made without the plugin.
"""

import functools
import os
import time

from attnbench.kernels import KERNELS

KERNEL_ENV = "ATTNBENCH_TEST_SLOW_KERNEL"
SLEEP_ENV = "ATTNBENCH_TEST_SLEEP_S"


def _slowed(prepare, pause: float):
    @functools.wraps(prepare)
    def slow_prepare(inputs, mask):
        run = prepare(inputs, mask)

        def slow_run():
            time.sleep(pause)
            return run()

        return slow_run

    return slow_prepare


_name = os.environ.get(KERNEL_ENV)
_pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
if _name and _pause > 0:
    _kernel = KERNELS.get(_name)  # the registry's one instance of that kernel
    _kernel.prepare = _slowed(_kernel.prepare, _pause)
