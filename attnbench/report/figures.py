"""The paper's figures from records, drawn with matplotlib (Agg, no display) into PNG bytes.

Nothing here imports a kernel: figures read records, and mask pictures build the mask from
its slices (block-level counts for large S, never a dense S x S array).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

PASS_ORDER = ("forward", "backward", "forward_backward")
MAX_MASK_BLOCKS = 256


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def text(value: Any) -> str:
    """A string from records, safe for matplotlib: `$` would start mathtext, a leading `_`
    hides a legend entry."""
    out = str(value).replace("$", r"\$")
    return " " + out if out.startswith("_") else out


def png_bytes(fig, dpi: int = 96) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _seqlen_label(n: float) -> str:
    n = int(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def _seqlen_axis(ax, seqlens: list[int]) -> None:
    ax.set_xlabel("sequence length")
    if not seqlens:  # nothing measured: no axis to label
        ax.set_xticks([])
        return
    ax.set_xscale("log", base=2)
    ticks = sorted(set(seqlens))
    ax.set_xticks(ticks)
    ax.set_xticklabels([_seqlen_label(s) for s in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sequence length")
    ax.grid(True, alpha=0.3)


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""


# -- TFLOPs/s and memory against seqlen ----------------------------------------------------


def _lines(ax, points: dict[str, list[tuple[int, float]]], ylabel: str) -> bool:
    drawn = False
    for kernel, pts in points.items():
        pts = sorted(p for p in pts if p[1] is not None and math.isfinite(p[1]))
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=text(kernel))
        drawn = True
    ax.set_ylabel(ylabel)
    return drawn


def performance_figure(title: str, by_pass: dict[str, dict[str, list[tuple[int, float]]]], ylabel: str) -> Optional[bytes]:
    """One subplot per pass; a line per kernel. None if nothing measured."""
    plt = _plt()
    passes = [p for p in PASS_ORDER if p in by_pass] + [p for p in by_pass if p not in PASS_ORDER]
    if not passes:
        return None
    fig, axes = plt.subplots(1, len(passes), figsize=(4.6 * len(passes), 3.4), squeeze=False)
    any_drawn = False
    for ax, pass_name in zip(axes[0], passes):
        points = by_pass[pass_name]
        drawn = _lines(ax, points, ylabel)
        any_drawn |= drawn
        _seqlen_axis(ax, [x for pts in points.values() for x, _ in pts])
        ax.set_title(text(pass_name), fontsize=10)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no ok case", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_ylim(bottom=0)
    fig.suptitle(text(title), fontsize=11)
    return png_bytes(fig)


def grid_figure(title: str, panels: dict[str, dict[str, list[tuple[int, float]]]], ylabel: str,
                xlabel: str = "sequence length", log2_x: bool = True, cols: int = 3) -> Optional[bytes]:
    """Small multiples: one subplot per panel (e.g. mask), a line per series (kernel or method)."""
    plt = _plt()
    if not panels:
        return None
    n = len(panels)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, panels.items()):
        drawn = _lines(ax, points, ylabel)
        xs = [x for pts in points.values() for x, _ in pts]
        if log2_x:
            _seqlen_axis(ax, xs)
        else:
            ax.set_xticks(sorted(set(xs)) if xs else [])
            ax.set_xlabel(xlabel)
            ax.grid(True, alpha=0.3)
        ax.set_title(text(name), fontsize=9)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no ok case", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(text(title), fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


# -- masks ---------------------------------------------------------------------------------


def mask_density(mask, head: int = 0, max_blocks: int = MAX_MASK_BLOCKS) -> tuple[np.ndarray, int]:
    """(fraction of allowed pairs per block [nqb, nkb], block size) of one head of a mask."""
    from attnbench.masks.convert import block_counts

    S = mask.seqlen
    block = max(1, math.ceil(S / max_blocks))
    counts = block_counts(mask, block, block)[min(head, mask.heads - 1)].astype(np.float64)
    edges = np.minimum(block, S - np.arange(counts.shape[0]) * block).astype(np.float64)
    area = np.outer(edges, np.minimum(block, S - np.arange(counts.shape[1]) * block))
    return counts / area, block


def draw_mask(ax, mask, head: int = 0, max_blocks: int = MAX_MASK_BLOCKS) -> int:
    density, block = mask_density(mask, head, max_blocks)
    S = mask.seqlen
    ax.imshow(density, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", extent=(0, S, S, 0))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ticks = [0, S // 2, S]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([_seqlen_label(t) if t else "0" for t in ticks])
    ax.set_yticklabels([_seqlen_label(t) if t else "0" for t in ticks])
    return block


def mask_title(mask, block: int, head: int = 0) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted((mask.info().get("params") or {}).items()))
    params = f"({params})" if params else ""
    level = "exact" if block == 1 else f"blocks of {block}x{block} tokens, shade = allowed fraction"
    head_note = f", head {head}" if mask.heads > 1 else ""
    return f"{mask.name}{params} S={_seqlen_label(mask.seqlen)}{head_note}\n{level}, density {mask.area / (mask.seqlen ** 2 * mask.heads):.3f}"


def mask_figure(mask, head: int = 0, max_blocks: int = MAX_MASK_BLOCKS, size: float = 4.0, colorbar: bool = True):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(size, size))
    block = draw_mask(ax, mask, head, max_blocks)
    if colorbar:
        im = ax.get_images()[0]
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="allowed fraction")
    ax.set_title(text(mask_title(mask, block, head)), fontsize=9)
    return fig


def save_mask_picture(mask, out, head: int = 0, max_blocks: int = MAX_MASK_BLOCKS) -> int:
    """Write the picture of one mask to `out` (format from the suffix: png, svg, pdf); the block size."""
    fig = mask_figure(mask, head, max_blocks)
    block = max(1, math.ceil(mask.seqlen / max_blocks))
    fig.savefig(out, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return block


def mask_png(mask, head: int = 0, max_blocks: int = MAX_MASK_BLOCKS) -> bytes:
    return png_bytes(mask_figure(mask, head, max_blocks, size=3.2, colorbar=False))
