"""The HTML report (in a real headless Chromium) and `attnbench masks show`.

Chromium is Debian's `chromium` package, driven over the DevTools protocol on a pipe
(tests/chromium.py): the page must load with no console error and no network request, every
figure must be decoded (natural width > 0), and a full-page screenshot is written. Set
ATTNBENCH_TEST_ARTIFACTS=DIR to keep the reports and screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from attnbench.results.schema import CPResult, RunInfo, Status
from attnbench.results.store import RunWriter, load_run
from tests.chromium import chromium_path, load_page
from tests.helpers import ROOT, run_cli
from tests.synthetic_runs import Spec, case, noisy_samples, record_for, write_run

CHROMIUM = chromium_path()
# CI sets ATTNBENCH_REQUIRE_CHROMIUM=1: there a missing browser fails instead of skipping
if CHROMIUM is None and os.environ.get("ATTNBENCH_REQUIRE_CHROMIUM"):
    raise RuntimeError("ATTNBENCH_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install -y chromium)")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")

PROBE = """(() => {
  const imgs = [...document.images];
  return {
    images: imgs.map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, complete: i.complete,
                            shown: i.getBoundingClientRect().width})),
    svgs: [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    scripts: document.scripts.length,
    text: document.body.innerText,
  };
})()"""


def artifacts(tmp_path: Path) -> Path:
    out = os.environ.get("ATTNBENCH_TEST_ARTIFACTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    return tmp_path


def open_in_chromium(report: Path, screenshot: Path):
    page = load_page(report.resolve().as_uri(), PROBE, executable=CHROMIUM)
    screenshot.write_bytes(page.screenshot)
    assert page.errors == [], page.errors
    own = report.resolve().as_uri()
    remote = [u for u in page.requests if u != own and not u.startswith("data:")]
    assert remote == [], f"the report fetched {remote}"
    assert page.failed == []
    probe = page.probe
    assert probe["scripts"] == 0
    for img in probe["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0 and img["shown"] > 0, img
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
    return probe


def static_checks(html: str) -> None:
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'' in html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I), "a remote reference"


@pytest.fixture(scope="module")
def longctx_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("longctx")
    result = run_cli("run", "suites/longctx.yaml", "--masks", "full,causal,causal_document",
                     "--kernels", "naive,sdpa,flex", "--out", str(root))
    assert result.returncode == 0, result.stderr
    [run_dir] = list(root.iterdir())
    return root, run_dir


def slowed_copy(run_dir: Path, root: Path, factor: float, kernels: tuple[str, ...]):
    """A second run: the same records, `kernels` `factor` times slower (a planted regression)."""
    run = load_run(run_dir)
    run_id = run.info.run_id[:-6] + "ffffff"
    info = RunInfo.model_validate({**run.info.model_dump(), "run_id": run_id, "state": "running"})
    writer = RunWriter(root, info)
    for r in run.records:
        update = {"run_id": run_id}
        if r.timing is not None and r.case.kernel in kernels:
            t = r.timing
            scaled = lambda samples: None if samples is None else [s * factor for s in samples]  # noqa: E731
            rounds = None if t.rounds is None else [
                e.model_copy(update={"samples_s": scaled(e.samples_s), "cpu_samples_s": scaled(e.cpu_samples_s)})
                for e in t.rounds]
            update["timing"] = t.model_copy(update={  # wall and CPU time (compare reads one-thread CPU cases' CPU time)
                "samples_s": scaled(t.samples_s), "median_s": t.median_s * factor, "p20_s": t.p20_s * factor,
                "p80_s": t.p80_s * factor, "cpu_samples_s": scaled(t.cpu_samples_s), "rounds": rounds})
            update["tflops"] = r.tflops / factor if r.tflops else None
        writer.append(r.model_copy(update=update))
    writer.finish("complete")
    return writer.dir


@needs_chromium
def test_report_of_a_cpu_longctx_run_shows_every_figure_in_chromium(longctx_run, tmp_path):
    root, run_dir = longctx_run
    out = artifacts(tmp_path)
    report = out / "report-longctx.html"
    result = run_cli("report", run_dir.name, "--root", str(root), "--out", str(report))
    assert result.returncode == 0, result.stderr
    html = report.read_text()
    static_checks(html)
    probe = open_in_chromium(report, out / "report-longctx.png")
    alts = [i["alt"] for i in probe["images"]]
    # TFLOPs/s per mask (forward and backward in each), peak memory per pass, a picture per mask
    for mask in ("full", "causal", "causal_document(lengths_at=8192)"):
        assert f"TFLOPs/s {mask}" in alts
        assert any(a.startswith(f"mask {mask}") for a in alts)
    assert "Peak memory forward" in alts and "Peak memory backward" in alts
    assert len(alts) == 8
    for heading in ("Runs", "TFLOPs/s against sequence length", "Peak memory", "Support matrix", "Masks"):
        assert heading in probe["headings"]
    # the support matrix from the statuses: flex has no backward on CPU
    assert "ok 2/4" in probe["text"]


@needs_chromium
def test_report_of_several_runs_has_the_compare_table_and_trends(longctx_run, tmp_path):
    root, run_dir = longctx_run
    runs_root = tmp_path / "runs"
    shutil.copytree(run_dir, runs_root / run_dir.name)
    # the fast kernels have enough samples for a verdict (naive's 1K cases may have only 2)
    slowed = slowed_copy(run_dir, runs_root, 3.0, ("sdpa", "flex"))
    out = artifacts(tmp_path)
    report = out / "report-two-runs.html"
    result = run_cli("report", run_dir.name, slowed.name, "--root", str(runs_root), "--out", str(report))
    assert result.returncode == 0, result.stderr
    static_checks(report.read_text())
    probe = open_in_chromium(report, out / "report-two-runs.png")
    assert "Compare" in probe["headings"] and "Trend of each case" in probe["headings"]
    assert "regressed" in probe["text"]
    assert len(probe["svgs"]) >= 20 and all(w > 0 for w in probe["svgs"])  # a sparkline per case


def cp_specs(rng):
    from attnbench.cases import CPSpec

    specs = []
    for method, speed in (("ring", 1.0), ("ulysses", 0.8)):
        for world in (1, 2, 4):
            c = case("sdpa_flash", "causal", 16384).model_copy(
                update={"cp": CPSpec(method=method, world_size=world)})
            spec = Spec(c, samples=noisy_samples(1e-3 * speed / world ** 0.8, 10, 0.01, rng))
            specs.append(spec)
    return specs


@needs_chromium
def test_report_escapes_strings_from_records_and_draws_cp_scaling(tmp_path):
    rng = np.random.default_rng(0)
    evil = "<script>alert('x')</script>"
    specs = [
        Spec(case("flex", "causal", 4096, note=evil), samples=noisy_samples(1e-3, 10, 0.01, rng)),
        Spec(case("flex", "causal", 8192), samples=noisy_samples(4e-3, 10, 0.01, rng)),
        Spec(case("flex", "full", 8192), Status.oom, reason=evil),
    ]
    cp = cp_specs(rng)
    run = write_run(tmp_path, specs + cp, suite=evil)
    # CP records carry their per-rank result
    lines = []
    for spec in cp:
        r = record_for(run.info.run_id, spec)
        r = r.model_copy(update={"cp": CPResult(
            world_size=spec.case.cp.world_size, backend="nccl", rank_median_s=[r.timing.median_s],
            mean_s=r.timing.median_s, imbalance=1.0, rank_area=[1], area_imbalance=1.0, comm={}, comm_expected={},
            per_gpu_tflops=r.tflops / spec.case.cp.world_size)})
        lines.append(r.to_json_line())
    plain = [record_for(run.info.run_id, s).to_json_line() for s in specs]
    (run.path / "records.jsonl").write_text("\n".join(plain + lines) + "\n")
    report = artifacts(tmp_path) / "report-escaped.html"
    result = run_cli("report", str(run.path), "--out", str(report))
    assert result.returncode == 0, result.stderr
    html = report.read_text()
    static_checks(html)
    assert "&lt;script&gt;" in html
    probe = open_in_chromium(report, artifacts(tmp_path) / "report-escaped.png")
    assert "Context parallelism" in probe["headings"]
    assert "CP per-GPU TFLOPs/s" in [i["alt"] for i in probe["images"]]
    assert evil in probe["text"]  # shown as text, not run


def test_report_bad_input(tmp_path):
    bad = run_cli("report", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    write_run(tmp_path, [Spec(case(), samples=[1e-3] * 3)])
    bad = run_cli("report", "latest", "--root", str(tmp_path), "--out", str(tmp_path / "r.pdf"))
    assert bad.returncode == 2 and "html" in bad.stderr


# -- masks show ----------------------------------------------------------------------------


def test_mask_density_is_exact_at_block_one_and_conserves_area():
    from attnbench.masks import build_mask
    from attnbench.masks.convert import dense
    from attnbench.report.figures import mask_density

    small = build_mask("causal_document", 200, {"seed": 3})
    density, block = mask_density(small, max_blocks=256)
    assert block == 1
    assert np.array_equal(density.astype(bool), dense(small)[0].numpy())
    large = build_mask("sliding_window_causal", 10_000, {"window": 500})
    density, block = mask_density(large, max_blocks=100)
    assert block == 100 and density.shape == (100, 100)
    assert 0.0 <= density.min() and density.max() <= 1.0
    assert density.sum() * block * block == pytest.approx(large.area, rel=1e-9)


def test_masks_show_writes_pictures(tmp_path):
    small = tmp_path / "small.png"
    result = run_cli("masks", "show", "sliding_window", "--seqlen", "200", "--set", "window=16", "--out", str(small))
    assert result.returncode == 0, result.stderr
    assert "exact" in result.stdout and small.read_bytes()[:4] == b"\x89PNG" and small.stat().st_size > 5_000
    big = tmp_path / "big.svg"
    result = run_cli("masks", "show", "causal_document", "--seqlen", "128K", "--seed", "7", "--out", str(big))
    assert result.returncode == 0, result.stderr
    assert "block-level" in result.stdout and big.read_text().lstrip().startswith("<?xml")
    bad = run_cli("masks", "show", "casual", "--seqlen", "128", "--out", str(small))
    assert bad.returncode == 2 and "did you mean 'causal'" in bad.stderr
    bad = run_cli("masks", "show", "causal", "--seqlen", "128", "--out", str(tmp_path / "m.txt"))
    assert bad.returncode == 2 and ".png" in bad.stderr


def test_report_and_compare_never_import_a_kernel():
    code = (
        "import sys, attnbench.compare, attnbench.history, attnbench.report.html, attnbench.report.figures;"
        "bad = [m for m in sys.modules if m.startswith('attnbench.kernels')]; print(bad); sys.exit(1 if bad else 0)"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_chromium
def test_the_support_matrix_fits_a_1400_px_window(tmp_path):
    """Every kernel of the registry across, longctx's 13 masks (with their parameters) down: the
    matrix wraps its labels instead of scrolling sideways."""
    from attnbench.kernels import KERNELS
    from attnbench.report.html import STYLE, _support_section
    from attnbench.suite import load_suite

    suite = load_suite(ROOT / "suites" / "longctx.yaml", profile="cpu", cuda_available=False)
    masks = list({c.mask.label(): c.mask for c in suite.cases}.values())
    specs = []
    for k, kernel in enumerate(KERNELS.names()):
        for m, mask in enumerate(masks):
            for s, seqlen in enumerate((512, 1024)):
                c = case(kernel, mask.name, seqlen, device="cpu", **mask.params)
                failing = (k + m + s) % 3 == 0
                specs.append(Spec(c, status=Status.error if failing else Status.ok,
                                  samples=None if failing else [1e-3] * 5))
    run = write_run(tmp_path, specs, suite="longctx")
    page = tmp_path / "matrix.html"
    page.write_text(f"<!doctype html><html><head><style>{STYLE}</style></head><body>{_support_section(run)}</body></html>")
    probe = ("(() => { const t = document.querySelector('table'); return {page: document.documentElement.scrollWidth,"
             " right: t.getBoundingClientRect().right, rows: t.rows.length, cols: t.rows[0].cells.length}; })()")
    result = load_page(page.resolve().as_uri(), probe, executable=CHROMIUM, width=1400, full_page=False)
    assert result.probe["rows"] == 1 + len(masks) and result.probe["cols"] == 1 + len(KERNELS.names())
    assert result.probe["page"] <= 1400 and result.probe["right"] <= 1400, result.probe
