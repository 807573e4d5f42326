"""One self-contained HTML report of one or more runs.

Self-contained: figures are embedded as base64 PNG (`data:` URLs) or inline SVG, styles are
inline, there is no script, and a Content-Security-Policy meta tag forbids loading anything
else, so the file opens offline and never touches the network. Every string that comes from
a suite or a record is escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from attnbench.results.schema import Record, Status
from attnbench.results.store import LoadedRun

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1400px; color: #1b1f24; padding: 0 16px; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.86em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: 0.85em; color: #57606a; }
.masks { display: flex; flex-wrap: wrap; gap: 12px; } .masks figure { margin: 0; }
.ok { background: #dafbe1; } .partial { background: #fff8c5; } .fail { background: #ffebe9; } .na { background: #f6f8fa; color: #6e7781; }
.s-regressed, .s-new_failure { background: #ffebe9; } .s-improved, .s-fixed { background: #dafbe1; } .s-noisy { background: #fff8c5; }
.s-incomparable { background: #fbefff; } .s-added, .s-removed { background: #fff8c5; }
.warn { color: #9a6700; } .muted { color: #6e7781; } code { font-size: 0.92em; }
svg.spark { vertical-align: middle; }
table.matrix { max-width: 100%; } table.matrix th { overflow-wrap: anywhere; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _img(png: bytes, alt: str, cls: str = "figure") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _figure(png: Optional[bytes], title: str, caption: str = "") -> str:
    if png is None:
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{_img(png, title)}{cap}</figure>"


def _table(header: list[str], rows: Iterable[list[str]], raw: bool = False, row_classes: Optional[list[str]] = None) -> str:
    """`rows` hold plain strings (escaped here) unless `raw` (already HTML)."""
    out = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{esc(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join(f"<td>{c if raw else esc(c)}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _is_cp(r: Record) -> bool:
    return "cp_method" in r.key or r.case.cp is not None


def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


# -- sections ------------------------------------------------------------------------------


def _runs_section(runs: list[LoadedRun]) -> str:
    from attnbench.compare.environment import device_model

    rows = []
    for run in runs:
        info, env = run.info, run.info.environment or {}
        counts = Counter(r.status.value for r in run.records)
        dev = "cuda" if any(r.case.device.startswith("cuda") for r in run.records) else "cpu"
        rows.append([
            info.run_id, info.suite.name, info.suite.profile or "-", info.started_at, info.state,
            ", ".join(f"{n} {s}" for s, n in counts.most_common()) or "no records",
            device_model(env, dev) or "-", (env.get("torch") or {}).get("version") or "-",
            ((env.get("attnbench") or {}).get("git_commit") or "-")[:10],
        ])
    warnings = [f"{run.info.run_id}: {w}" for run in runs for w in run.warnings]
    html_warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in warnings)
    return "<h2>Runs</h2>" + _table(
        ["run", "suite", "profile", "started", "state", "records", "device", "torch", "commit"], rows
    ) + html_warn


def _group_title(mask_label: str, extra: dict[str, Any]) -> str:
    return mask_label + "".join(f", {k}={v}" for k, v in extra.items())


def _shape_fields(records: list[Record]) -> list[str]:
    fields = []
    for name, get in (("dtype", lambda r: r.case.dtype), ("batch", lambda r: r.case.shape.batch),
                      ("heads", lambda r: f"{r.case.shape.heads_q}:{r.case.shape.heads_kv}"),
                      ("head_dim", lambda r: r.case.shape.head_dim)):
        if len({get(r) for r in records}) > 1:
            fields.append(name)
    return fields


def _shape_value(r: Record, name: str) -> Any:
    s = r.case.shape
    return {"dtype": r.case.dtype, "batch": s.batch, "heads": f"{s.heads_q}:{s.heads_kv}", "head_dim": s.head_dim}[name]


def _performance_section(run: LoadedRun) -> str:
    from attnbench.report.figures import performance_figure

    records = [r for r in run.records if not _is_cp(r)]
    if not records:
        return ""
    vary = _shape_fields(records)
    groups: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        title = _group_title(r.case.mask.label(), {f: _shape_value(r, f) for f in vary})
        series = groups[title][r.case.pass_.value][r.case.kernel]
        if r.status is Status.ok and r.tflops is not None:
            series.append((r.case.shape.seqlen, r.tflops))
    parts = ["<h2>TFLOPs/s against sequence length</h2>",
             f'<p class="muted">Run {esc(run.info.run_id)}; one figure per mask, a line per kernel; '
             "only ok cases are drawn (see the support matrix for the others).</p>"]
    for title, by_pass in groups.items():
        parts.append(_figure(performance_figure(f"TFLOPs/s: {title}", by_pass, "TFLOPs/s"), f"TFLOPs/s {title}"))
    return "".join(parts)


def _memory_section(run: LoadedRun) -> str:
    from attnbench.report.figures import grid_figure

    records = [r for r in run.records if not _is_cp(r)]
    by_pass: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    methods = set()
    for r in records:
        panel = by_pass[r.case.pass_.value][r.case.mask.label()]
        series = panel[r.case.kernel]
        if r.status is Status.ok and r.memory is not None and r.memory.peak_bytes is not None:
            series.append((r.case.shape.seqlen, r.memory.peak_bytes / 2**20))
            methods.add(r.memory.method)
    if not by_pass:
        return ""
    parts = ["<h2>Peak memory</h2>",
             f'<p class="muted">Peak memory in MiB over the baseline ({esc(", ".join(sorted(methods)) or "n/a")}); '
             "on CPU small cases can read 0 (freed memory is reused without growing the process).</p>"]
    for pass_name, panels in by_pass.items():
        png = grid_figure(f"Peak memory (MiB): {pass_name}", panels, "MiB")
        parts.append(_figure(png, f"Peak memory {pass_name}"))
    return "".join(parts)


def _cp_section(run: LoadedRun) -> str:
    from attnbench.report.figures import grid_figure

    records = [r for r in run.records if _is_cp(r)]
    if not records:
        return ""
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        title = f"{r.case.mask.label()} S={r.case.shape.seqlen} {r.case.pass_.value}"
        method = str(r.key.get("cp_method") or (r.case.cp.method if r.case.cp else "?"))
        world = int(r.key.get("world_size") or (r.case.cp.world_size if r.case.cp else 1))
        value = None
        if r.status is Status.ok:
            if r.cp is not None and r.cp.per_gpu_tflops is not None:
                value = r.cp.per_gpu_tflops
            elif r.tflops is not None:
                value = r.tflops / world
        series = panels[title][f"{method} [{r.case.kernel}]"]
        if value is not None:
            series.append((world, value))
    png = grid_figure("Context parallelism: per-GPU TFLOPs/s against world size", panels, "TFLOPs/s per GPU",
                      xlabel="world size", log2_x=False)
    return ("<h2>Context parallelism</h2>"
            f'<p class="muted">Run {esc(run.info.run_id)}; a line per CP method (local kernel in brackets); '
            "latency is the slowest rank.</p>" + _figure(png, "CP per-GPU TFLOPs/s"))


def _support_section(run: LoadedRun) -> str:
    records = [r for r in run.records if not _is_cp(r)]
    if not records:
        return ""
    kernels = list(dict.fromkeys(r.case.kernel for r in records))
    masks = list(dict.fromkeys(r.case.mask.label() for r in records))
    cells: dict[tuple[str, str], Counter] = defaultdict(Counter)
    reasons: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        cells[(r.case.kernel, r.case.mask.label())][r.status.value] += 1
        if r.status is not Status.ok and r.reason:
            reasons[(r.case.kernel, r.case.mask.label())].append(f"{r.status.value}: {r.reason}")
    failures = {"oom", "error", "invalid", "timeout"}
    rows = []
    for mask in masks:  # masks down, kernels across: labels wrap, so the matrix fits the page width
        row = [f"<th>{_breakable(mask)}</th>"]
        for kernel in kernels:
            counts = cells.get((kernel, mask))
            if not counts:
                row.append('<td class="na">-</td>')
                continue
            total = sum(counts.values())
            ok = counts.get("ok", 0)
            if ok == total:
                cls, label = "ok", "ok"
            elif set(counts) & failures:
                cls = "fail"
                label = ", ".join(f"{n} {s}" for s, n in counts.most_common())
            elif ok:
                cls, label = "partial", f"ok {ok}/{total}"
            else:
                cls, label = "na", counts.most_common(1)[0][0] if len(counts) == 1 else ", ".join(counts)
            tip = "; ".join(dict.fromkeys(reasons.get((kernel, mask), [])))
            row.append(f'<td class="{cls}" title="{esc(tip)}">{esc(label)}</td>')
        rows.append("<tr>" + "".join(row) + "</tr>")
    head = "<tr><th>mask \\ kernel</th>" + "".join(f"<th>{_breakable(k)}</th>" for k in kernels) + "</tr>"
    return ("<h2>Support matrix</h2>"
            f'<p class="muted">Mask x kernel from the statuses of run {esc(run.info.run_id)} '
            "(all seqlens, dtypes and passes; hover a cell for the reasons).</p>"
            f'<table class="matrix"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


def _breakable(label: str) -> str:
    """`label` escaped, with line-break opportunities after "_" and "," and before "(": a long
    mask or kernel name wraps in its cell instead of widening the table past the page."""
    text = esc(label)
    return text.replace("_", "_<wbr>").replace(",", ",<wbr>").replace("(", "<wbr>(")


def _masks_section(run: LoadedRun) -> str:
    from attnbench.masks import build_mask
    from attnbench.report.figures import mask_png

    chosen: dict[tuple, tuple[str, dict, int]] = {}
    for r in run.records:
        m = r.case.mask
        ident = (m.name, tuple(sorted(m.params.items())))
        if ident not in chosen or r.case.shape.seqlen > chosen[ident][2]:
            chosen[ident] = (m.name, dict(m.params), r.case.shape.seqlen)
    parts = ["<h2>Masks</h2>", '<p class="muted">Each mask at the largest sequence length of the run '
             "(query rows down, keys across; exact up to 256 tokens, above that each pixel is a block "
             "shaded by its allowed fraction).</p>", '<div class="masks">']
    for name, params, seqlen in chosen.values():
        label = name + (f"({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})" if params else "")
        try:
            png = mask_png(build_mask(name, seqlen, params))
            parts.append(_figure(png, f"mask {label}", f"{label} at S={seqlen}"))
        except Exception as exc:  # noqa: BLE001 - a plugin mask missing here must not sink the report
            parts.append(f'<p class="warn">mask {esc(label)}: no picture ({esc(exc)})</p>')
    parts.append("</div>")
    return "".join(parts)


def _compare_section(base: LoadedRun, current: LoadedRun) -> str:
    from attnbench.compare import compare_runs
    from attnbench.compare.render import _change, _ms, _notes, _p, geomean_lines, summary_line

    cmp = compare_runs(base, current)
    rows, classes = [], []
    for c in cmp.cases:
        rows.append([c.state.label, c.label, _ms(c.base, c.base_status), _ms(c.current, c.current_status),
                     _change(c), _p(c), "; ".join(_notes(c))])
        classes.append(f"s-{c.state.value}")
    warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in cmp.warnings)
    for dev, diffs in cmp.env_differences.items():
        warn += f'<p class="warn">environment ({esc(dev)}): {esc("; ".join(map(str, diffs)))}</p>'
    geo = "".join(f"<li>{esc(line)}</li>" for line in geomean_lines(cmp))
    return (
        "<h2>Compare</h2>"
        f"<p>Base <code>{esc(base.info.run_id)}</code> (the first run given) against current "
        f"<code>{esc(current.info.run_id)}</code> (the last); threshold {cmp.threshold:.0%}, "
        f"Mann-Whitney U p &lt; {cmp.alpha:g}. <b>{esc(summary_line(cmp))}</b></p>"
        + warn
        + _table(["state", "case", "base", "current", "change", "p", "note"], rows, row_classes=classes)
        + (f"<p>Geometric mean of current/base time:</p><ul>{geo}</ul>" if geo else "")
    )


def _sparkline(values: list[Optional[float]], width: int = 160, height: int = 30) -> str:
    pts = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not pts:
        return ""
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    span = hi - lo or 1.0
    n = max(len(values) - 1, 1)

    def xy(i, v):
        return 4 + (width - 8) * i / n, height - 4 - (height - 8) * (v - lo) / span

    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#0969da"/>' for x, y in (xy(i, v) for i, v in pts))
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img"><polyline fill="none" stroke="#0969da" stroke-width="1.5" '
            f'points="{coords}"/>{dots}</svg>')


def _trend_section(runs: list[LoadedRun]) -> str:
    by_case: dict[str, dict[str, Record]] = defaultdict(dict)
    labels: dict[str, str] = {}
    for run in runs:
        for r in run.records:
            by_case[r.case_id][run.info.run_id] = r
            labels[r.case_id] = r.case.label()
    run_ids = [run.info.run_id for run in runs]
    rows = []
    for case_id, per_run in by_case.items():
        if len(per_run) < 2:
            continue
        cells, medians = [], []
        for run_id in run_ids:
            r = per_run.get(run_id)
            if r is None:
                cells.append("-")
                medians.append(None)
            elif r.status is Status.ok and r.timing is not None:
                cells.append(f"{r.timing.median_s * 1e3:.4g} ms")
                medians.append(r.timing.median_s)
            else:
                cells.append(r.status.value)
                medians.append(None)
        measured = [m for m in medians if m]
        change = f"{measured[-1] / measured[0] - 1:+.1%}" if len(measured) >= 2 else ""
        rows.append([esc(labels[case_id])] + [esc(c) for c in cells] + [esc(change), _sparkline(medians)])
    if not rows:
        return ""
    header = ["case"] + [f"#{i + 1} {rid}" for i, rid in enumerate(run_ids)] + ["last/first", "median time"]
    return ("<h2>Trend of each case</h2>"
            '<p class="muted">Median time per run, oldest first (lower is faster).</p>'
            + _table(header, rows, raw=True))


def _environment_section(run: LoadedRun) -> str:
    env = run.info.environment or {}

    def flat(prefix: str, value: Any, out: list):
        if isinstance(value, dict):
            for k, v in value.items():
                flat(f"{prefix}.{k}" if prefix else str(k), v, out)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                flat(f"{prefix}[{i}]", v, out)
        else:
            out.append([prefix, value if not isinstance(value, list) else ", ".join(map(str, value))])
        return out

    rows = flat("", env, [])
    return (f"<h2>Environment</h2><details><summary>Environment of run {esc(run.info.run_id)} "
            f"({len(rows)} fields)</summary>" + _table(["field", "value"], rows) + "</details>")


def build_report(runs: list[LoadedRun], title: Optional[str] = None) -> str:
    if not runs:
        raise ValueError("a report needs at least one run")
    import attnbench

    current = runs[-1]
    title = title or f"attnbench report: {current.info.suite.name} ({current.info.run_id})"
    sections = [_runs_section(runs)]
    if len(runs) >= 2:
        sections.append(_compare_section(runs[0], current))
    sections += [
        _performance_section(current),
        _memory_section(current),
        _cp_section(current),
        _support_section(current),
        _masks_section(current),
    ]
    if len(runs) >= 2:
        sections.append(_trend_section(runs))
    sections.append(_environment_section(current))
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="muted">Made {esc(made)} by attnbench {esc(getattr(attnbench, "__version__", ""))} '
        f"from {len(runs)} run(s); self-contained (no network).</p>"
        + "".join(s for s in sections if s)
        + "</body></html>\n"
    )
