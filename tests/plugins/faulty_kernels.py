"""Test-only kernels that fail in the ways real kernels fail (loaded via ATTNBENCH_PLUGINS)."""

import torch

from attnbench.errors import Unsupported
from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput
from attnbench.kernels.builtin.naive import NaiveKernel


@register_kernel("raises")
class RaisingKernel(NaiveKernel):
    name = "raises"
    description = "raises RuntimeError on every call (test plugin)"

    def prepare(self, inputs, mask):
        def run():
            raise RuntimeError("kernel exploded\nsecond line of detail")

        return run


@register_kernel("out_of_memory")
class OutOfMemoryKernel(NaiveKernel):
    name = "out_of_memory"
    description = "runs out of memory (test plugin)"

    def prepare(self, inputs, mask):
        def run():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

        return run


@register_kernel("returns_nan")
class NanKernel(NaiveKernel):
    name = "returns_nan"
    description = "returns NaN (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)

        def nan_run():
            result = run()
            return AttnOutput(result.out * float("nan"), result.lse)

        return nan_run


@register_kernel("refuses_at_run_time")
class RefusingKernel(NaiveKernel):
    name = "refuses_at_run_time"
    description = "declares support but refuses the shape when called (test plugin)"

    def prepare(self, inputs, mask):
        raise Unsupported("head_dim 32 needs a multiple of 64 here")


@register_kernel("segfaults")
class SegfaultKernel(NaiveKernel):
    name = "segfaults"
    description = "dereferences a null pointer: the process dies with SIGSEGV (test plugin)"

    def prepare(self, inputs, mask):
        def run():
            import ctypes

            ctypes.string_at(0)

        return run


@register_kernel("aborts")
class AbortKernel(NaiveKernel):
    name = "aborts"
    description = "calls abort(): the process dies with SIGABRT (test plugin)"

    def prepare(self, inputs, mask):
        def run():
            import os

            os.abort()

        return run


@register_kernel("hangs")
class HangingKernel(NaiveKernel):
    name = "hangs"
    description = "sleeps for an hour: only the timeout ends it (test plugin)"

    def prepare(self, inputs, mask):
        def run():
            import time

            time.sleep(3600)

        return run
