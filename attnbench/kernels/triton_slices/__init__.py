"""attnbench's own FlashAttention-2-style Triton kernel, driven by the slices of a mask.

- ``schedule.py``: host-side (numpy) schedule: per query block the runs of full key blocks
  and the partial entries (one per block and touching slice, its rule inline), the same per
  key block for dk/dv, and the launch's programs (heaviest first, heavy rows split); one row
  per head for per-head (block-sparse) masks.
- ``kernels.py``: the Triton kernels (forward with lse; backward: delta, dk/dv per key block
  with GQA groups summed in-program and dq added atomically, the split rows' reduction, and
  the deterministic dq kernel).
- ``ops.py``: plans, the launches (as data, for ``attnbench inspect``) and the autograd
  Function ``slice_attention``.
- ``configs.py``: tiles per (arch, head dim, dtype, pass) from ``tuned.json`` or the default
  rule; ``tune.py``: the sweep that fills the table.

Nothing here imports triton until a kernel is launched (``ops`` imports ``kernels`` lazily),
so ``TRITON_INTERPRET`` may be set any time before the first launch.
"""

from attnbench.kernels.triton_slices.schedule import Schedule, build_schedule, mask_schedule

__all__ = ["Schedule", "build_schedule", "mask_schedule"]
