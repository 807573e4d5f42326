"""``attnbench inspect``: compile a Triton-based kernel's launches for a GPU target (no GPU
needed) and report what each function became. See :mod:`attnbench.inspect.report`."""

from attnbench.inspect.report import InspectReport, build_query, inspect_kernel, inspect_kernels

__all__ = ["InspectReport", "build_query", "inspect_kernel", "inspect_kernels"]
