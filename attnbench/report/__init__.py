"""The HTML report (one self-contained file) and mask pictures.

Public API:
    build_report(runs) -> str       attnbench.report.html
    write_report(runs, out) -> Path
    save_mask_picture(mask, out)    attnbench.report.figures
Figures are drawn with matplotlib's Agg back end; records are read, kernels never imported.
"""

from __future__ import annotations

from pathlib import Path


def write_report(runs, out: Path) -> Path:
    from attnbench.report.html import build_report

    out = Path(out)
    text = build_report(list(runs))
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = ["write_report"]
