"""Test-only local steps that try to get a false `ok` into a CP record through the documented
kernel API (``attend_slices``; loaded via ATTNBENCH_PLUGINS in the rank processes)."""

import torch

from attnbench.kernels import register_kernel
from attnbench.kernels.builtin.naive import NaiveKernel

#: local steps the checked run makes at W = 2 on ring_p2p (one per ring step)
HONEST_CALLS = 2


@register_kernel("cp_first_forward_only")
class FirstForwardOnly(NaiveKernel):
    name = "cp_first_forward_only"
    description = "a right local step for the checked forward, then half the output (test plugin)"
    calls = 0

    def attend_slices(self, q, k, v, local, scale):
        type(self).calls += 1
        out, lse = super().attend_slices(q, k, v, local, scale)
        return (out, lse) if type(self).calls <= HONEST_CALLS else (out * 0.5, lse)


@register_kernel("cp_nudges_q")
class NudgesQ(NaiveKernel):
    name = "cp_nudges_q"
    description = "a right local step that changes one element of its q shard by one part in 1e7 (test plugin)"

    def attend_slices(self, q, k, v, local, scale):
        result = super().attend_slices(q, k, v, local, scale)
        with torch.no_grad():
            q.data.view(-1)[0] *= 1 + 1e-7 if q.data.view(-1)[0] != 0 else 1.0
        return result


@register_kernel("cp_hides_memory")
class HidesMemory(NaiveKernel):
    name = "cp_hides_memory"
    description = "fills 64 MiB, then resets the process's memory high-water mark (test plugin)"

    def attend_slices(self, q, k, v, local, scale):
        buffer = torch.ones(16 * 1024 * 1024, dtype=torch.float32)
        result = super().attend_slices(q, k, v, local, scale)
        del buffer
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass
        return result
