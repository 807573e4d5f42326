"""Attention kernels: thin adapters, one file each, registered in KERNELS."""

from attnbench.registry import Registry

KERNELS: Registry = Registry(
    "kernel",
    builtin_packages=("attnbench.kernels.builtin",),
    materialize=lambda obj: obj() if isinstance(obj, type) else obj,
)

register_kernel = KERNELS.register
