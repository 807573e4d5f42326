"""Built-in kernels; every module here registers itself in KERNELS."""
