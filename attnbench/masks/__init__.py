"""Mask patterns: one definition per mask, as slices (see docs in masks.md of the spec).

Public API (the rest of attnbench uses only these names):
    MASKS           registry of MaskFamily, one file per family in attnbench/masks/families/
    build_mask      (name, seqlen, params=None, *, heads=1) -> Mask  (cached)
    Mask, SliceTable, SliceKind, MaskFamily, ParamSpec
    register_mask   decorator adding a family (built-ins and plugins alike)
Converters live in attnbench.masks.convert: dense, dense_rows, block_counts, mask_mod,
to_block_mask, VarlenForm, render_varlen.
"""

from attnbench.masks.mask import MASKS, Mask, MaskFamily, MaskParts, ParamSpec, build_mask, register_mask
from attnbench.masks.slices import SliceKind, SliceTable, band

__all__ = [
    "MASKS",
    "Mask",
    "MaskFamily",
    "MaskParts",
    "ParamSpec",
    "SliceKind",
    "SliceTable",
    "band",
    "build_mask",
    "register_mask",
]
