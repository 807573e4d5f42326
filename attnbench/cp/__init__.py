"""Context-parallel methods (Ulysses, ring, USP, ...): one file each, registered in CP_METHODS."""

from attnbench.registry import Registry

CP_METHODS: Registry = Registry(
    "CP method",
    builtin_packages=("attnbench.cp.methods",),
    materialize=lambda obj: obj() if isinstance(obj, type) else obj,
)
register_cp_method = CP_METHODS.register
