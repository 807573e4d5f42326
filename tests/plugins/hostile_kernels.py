"""Test-only kernels that try to get a false `ok` through the documented plugin API
(loaded via ATTNBENCH_PLUGINS). Each one cheats in a way a real, careless or hostile
kernel could; the harness must never record it as `ok`.
"""

import torch

from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnOutput
from attnbench.kernels.builtin.naive import NaiveKernel

#: what the memory faker allocates and touches before hiding it
FAKED_BYTES = 256 * 1024 * 1024


@register_kernel("first_call_only")
class FirstCallOnlyKernel(NaiveKernel):
    name = "first_call_only"
    description = "correct on its first call, then computes only the first half of the queries (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)
        calls = [0]

        def cheating_run():
            calls[0] += 1
            result = run()
            if calls[0] == 1:
                return result
            half = result.out.shape[2] // 2
            out = torch.cat([result.out[:, :, :half], torch.zeros_like(result.out[:, :, half:])], dim=2)
            return AttnOutput(out, result.lse)

        return cheating_run


@register_kernel("mutates_q")
class MutatingKernel(NaiveKernel):
    name = "mutates_q"
    description = "correct, but scales q by 1.01 in place on every call (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)

        def mutating_run():
            result = run()
            with torch.no_grad():
                inputs.q.data.mul_(1.01)
            return result

        return mutating_run


@register_kernel("hides_memory")
class MemoryFakingKernel(NaiveKernel):
    name = "hides_memory"
    description = "fills 256 MiB, then resets the process's memory high-water mark (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)

        def faking_run():
            buffer = torch.ones(FAKED_BYTES // 4, dtype=torch.float32)  # touched: resident
            result = run()
            del buffer
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                pass
            return result

        return faking_run


@register_kernel("holds_memory_from_prepare")
class PrepareMemoryKernel(NaiveKernel):
    name = "holds_memory_from_prepare"
    description = "allocates and keeps 256 MiB in prepare, none in the call (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)
        workspace = torch.ones(FAKED_BYTES // 4, dtype=torch.float32)

        def run_with_workspace():
            workspace[0] = 1.0  # keeps it alive as long as the closure
            return run()

        return run_with_workspace


@register_kernel("[/]adv")
class MarkupNameKernel(NaiveKernel):
    name = "[/]adv"
    description = "an honest kernel whose name is rich markup: [bold]bold[/bold] [/] (test plugin)"


@register_kernel("mutates_grad_out")
class GradOutMutatingKernel(NaiveKernel):
    name = "mutates_grad_out"
    description = "correct, but its backward scales the incoming gradient by 1.01 in place (test plugin)"

    def prepare(self, inputs, mask):
        run = super().prepare(inputs, mask)

        def mutating_run():
            result = run()
            if result.out.requires_grad:
                result.out.register_hook(lambda grad: grad.mul_(1.01))
            return result

        return mutating_run


HOSTILE_KERNELS = (FirstCallOnlyKernel, MutatingKernel, MemoryFakingKernel, PrepareMemoryKernel, MarkupNameKernel,
                   GradOutMutatingKernel)


def registered():
    """For in-process tests: (re-)register every hostile kernel; returns a function that removes them."""
    from attnbench.kernels import KERNELS

    for kernel in HOSTILE_KERNELS:
        if kernel.name not in KERNELS:
            KERNELS.add(kernel.name, kernel)

    def remove() -> None:
        for kernel in HOSTILE_KERNELS:
            KERNELS.unregister(kernel.name)

    return remove
