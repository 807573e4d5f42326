"""attnbench's own FlashAttention-2-style Triton kernel, driven by the slices of a mask.

- ``schedule.py``: host-side (numpy) schedule: per query block the key blocks its slices
  touch, split into FULL (no mask) and PARTIAL (with the slices' rules), and the transposed
  schedule per key block for dk/dv; one row per head for per-head (block-sparse) masks.
- ``kernels.py``: the Triton kernels (forward with lse; backward: delta preprocessing, dk/dv
  per key block with GQA groups summed in-program, dq atomically or by its own kernel).
- ``ops.py``: plans, launches and the autograd Function ``slice_attention``.

Nothing here imports triton until a kernel is launched (``ops`` imports ``kernels`` lazily),
so ``TRITON_INTERPRET`` may be set any time before the first launch.
"""

from attnbench.kernels.triton_slices.schedule import Schedule, build_schedule, mask_schedule

__all__ = ["Schedule", "build_schedule", "mask_schedule"]
