"""triton_slices: its host schedule here (fast, no Triton), and the kernel itself in Triton's
interpreter in a subprocess (``tests/interp_triton_slices.py`` with ``TRITON_INTERPRET=1``).

The interpreter must be switched on before anything in the process imports triton (torch's
compiler may import it early), hence the separate process. Run the kernel tests directly with
``TRITON_INTERPRET=1 python -m pytest -q tests/interp_triton_slices.py``. Marked ``triton``
(``pytest -m "not triton"`` leaves the slow one out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import numpy as np

from attnbench.kernels.triton_slices.schedule import Programs, build_programs, build_schedule, render_dense, split_cap
from attnbench.masks import MASKS, build_mask
from attnbench.masks.convert import dense
from tests.helpers import ROOT, run_cli
from tests.interp_triton_slices import SEQLEN, SMALL


def test_every_mask_is_covered():
    assert set(SMALL) == set(MASKS.names())


def _mask(name: str, seqlen: int = SEQLEN, heads: int = 4):
    return build_mask(name, seqlen, SMALL[name], heads=heads if MASKS.get(name).dynamic else 1)


def _visits(s, orientation: str):
    """Every (head, qb, kb, slice or None) the orientation visits; None for full blocks."""
    o = getattr(s, orientation)
    n_rows = s.n_qblocks if orientation == "by_q" else s.n_kblocks
    out = []
    for r in range(s.heads * n_rows):
        h, blk = divmod(r, n_rows)
        pair = (lambda x: (blk, int(x))) if orientation == "by_q" else (lambda x: (int(x), blk))
        for e in range(o.run_ptr[r], o.run_ptr[r + 1]):
            out += [(h, *pair(x), None) for x in range(o.run_lo[e], o.run_hi[e])]
        for e in range(o.part_ptr[r], o.part_ptr[r + 1]):
            out.append((h, *pair(o.part_block[e]), int(o.part_slice[e])))
    return out


@pytest.mark.parametrize("name", sorted(SMALL))
def test_schedule_renders_exactly_the_mask(name):
    """Host schedule only (no Triton): FULL runs + PARTIAL entries (one rule each) == the dense
    mask, and the transposed (per key block) schedule lists exactly the same visits."""
    mask = _mask(name, heads=3)
    expected = dense(mask).numpy()
    for bm, bn in [(32, 32), (16, 64), (64, 16), (128, 64)]:
        s = build_schedule(mask.slices, mask.seqlen, mask.heads, bm, bn)
        assert (render_dense(s) == expected).all(), (name, bm, bn)
        rows, cols = _visits(s, "by_q"), _visits(s, "by_k")
        assert sorted(rows, key=repr) == sorted(cols, key=repr)
        assert len(set(rows)) == len(rows) == s.blocks_visited
        full = {v[:3] for v in rows if v[3] is None}
        assert not full & {v[:3] for v in rows if v[3] is not None}  # a full block has no rule entries


def test_schedule_visits_only_touched_blocks():
    mask = build_mask("sliding_window_causal", 4096, {"window": 256})
    s = build_schedule(mask.slices, 4096, 1, 128, 128)
    # block row qb (rows 128 qb ...) sees keys from 128 qb - 256: block qb - 2 partially (its
    # upper triangle), qb - 1 fully, qb partially (the diagonal); nothing else of the 32 x 32
    assert (s.blocks_visited, s.n_full, s.n_partial) == (1 + 2 + 30 * 3, 31, 32 + 30)
    assert len(s.by_q.run_lo) == 31  # one run per row with a full block


def test_full_blocks_are_runs_and_the_schedule_is_small_at_1m_tokens():
    mask = build_mask("causal", 2**20, {})
    s = build_schedule(mask.slices, 2**20, 1, 128, 64)
    assert len(s.by_q.run_lo) == s.n_qblocks - 1  # row qb: keys [0, 2 qb) in one run
    assert s.n_full == sum(2 * qb for qb in range(s.n_qblocks))  # 67M full blocks, 8191 runs
    assert s.n_partial == 2 * s.n_qblocks


def _items(p: Programs, prog_rows) -> list:
    out = []
    for owner, block, r0, r1, e0, e1, *_ in prog_rows:
        for g, lo, hi, _pad in p.runs[r0:r1]:
            out += [(int(owner), int(block), int(g), x, None) for x in range(lo, hi)]
        out += [(int(owner), int(block), int(e[0]), int(e[1]), tuple(map(int, e[2:]))) for e in p.parts[e0:e1]]
    return out


def test_programs_heaviest_first_and_split_rows_cover_the_same_visits():
    mask = build_mask("causal_sink_window", 4096, {"sink": 64, "window": 256})
    s = build_schedule(mask.slices, 4096, 1, 32, 128)
    whole = build_programs(s, "by_k", 1, 4, replicas=8)
    split = build_programs(s, "by_k", 1, 4, replicas=8, split_slots=132)
    assert len(whole.splits) == 0 and len(split.splits) == 1
    owner, block, slot0, slot1 = split.splits[0]
    assert block == 0 and slot1 - slot0 >= 2  # the sink's key block, in segments
    for p in (whole, split):
        work = p.work()
        assert (np.diff(work) <= 0).all()  # longest processing time first
    cap = split_cap(int(whole.work().sum()) * 8, 132)
    assert whole.work().max() > cap >= split.work().max()
    assert sorted(_items(whole, whole.prog), key=repr) == sorted(_items(split, split.prog), key=repr)
    slots = split.prog[:, 6]
    assert sorted(slots[slots >= 0]) == list(range(slot0, slot1))
    # causal rows at most twice the mean: never split; a subset keeps its items and splits
    causal = build_schedule(build_mask("causal", 16384, {}).slices, 16384, 1, 32, 128)
    assert len(build_programs(causal, "by_k", 1, 8, replicas=8, split_slots=132).splits) == 0
    few = split.select(split.prog[:, 1] == 0)
    assert len(few.splits) == 1 and few.count == slot1 - slot0 and few.runs is split.runs
    assert len(split.select(split.prog[:, 1] == 1).splits) == 0


def test_per_head_programs_gather_their_groups_rows():
    """Per-head masks, GQA 4:2: the dk/dv program of (kv head, key block) visits exactly the
    rows of its two query heads, each item tagged with the query head's offset g."""
    mask = build_mask("block_sparse", 512, {"block": 64, "density": 0.3}, heads=4)
    s = build_schedule(mask.slices, 512, 4, 32, 64)
    p = build_programs(s, "by_k", 2, 2, replicas=1)
    expected = [(h // 2, kb, h % 2, qb, None if rule is None else tuple(map(int, s.rules[rule])))
                for h, qb, kb, rule in _visits(s, "by_k")]
    assert sorted(_items(p, p.prog), key=repr) == sorted(expected, key=repr)
    assert p.count == 2 * s.n_kblocks


@pytest.mark.triton
def test_kernel_in_the_interpreter_every_mask_forward_and_backward():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", str(ROOT / "tests" / "interp_triton_slices.py")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=840,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


def test_without_interpreter_cpu_is_unavailable_with_reason():
    pytest.importorskip("triton")
    proc = run_cli("list", "--json", env={"TRITON_INTERPRET": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "Triton on CPU needs TRITON_INTERPRET=1" in proc.stdout


def test_record_says_which_configuration_ran_and_that_it_is_untuned(tmp_path):
    pytest.importorskip("triton")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: cfg\n"
        "defaults: {heads_q: 2, heads_kv: 1, head_dim: 16, dtype: float32, passes: [forward],\n"
        "  budget: {warmup_seconds: 0, measure_seconds: 0.01, min_repeats: 1, max_repeats: 1}}\n"
        "sweep: {kernels: [triton_slices, naive], masks: [causal], seqlens: [64]}\n"
    )
    proc = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--inline", env={"TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run_dir] = (tmp_path / "out").iterdir()
    records = {r["key"]["kernel"]: r for r in map(json.loads, (run_dir / "records.jsonl").read_text().splitlines())}
    assert records["triton_slices"]["status"] == "ok", records["triton_slices"]["reason"]
    config = records["triton_slices"]["kernel_config"]
    assert config["arch"] == "interpreter" and config["tuned"] is False
    assert (config["forward"]["block_m"], config["forward"]["block_n"]) == (32, 32)
    assert config["forward"]["source"] == "default rule (untuned)"
    assert records["naive"]["kernel_config"] is None


def test_tuned_rows_come_from_the_table_and_say_so(tmp_path, monkeypatch):
    from attnbench.kernels.triton_slices import configs

    table = tmp_path / "tuned.json"
    table.write_text(json.dumps({"rows": [{
        "arch": "sm90", "head_dim": 128, "dtype": "bfloat16", "pass": "forward", "block_m": 128, "block_n": 128,
        "num_warps": 8, "stages": 2, "part_stages": 2, "machine": "NVIDIA H100 80GB HBM3", "date": "2026-01-01",
        "triton": "3.9.0"}]}))
    monkeypatch.setattr(configs, "TABLE", table)
    config = configs.config_for("sm90", 128, "bfloat16")
    assert (config.forward.block_n, config.forward.tuned) == (128, True)
    assert "H100" in config.forward.source
    assert config.dkdv == configs.default_tiles("sm90", 128, "bfloat16", "dkdv") and not config.dkdv.tuned
    assert config.describe()["tuned"] is False  # one pass still untuned
    assert configs.config_for("sm90", 64, "bfloat16").forward.tuned is False


def test_tune_candidates_table_and_refusals(tmp_path):
    from attnbench.errors import UserError
    from attnbench.kernels.triton_slices import configs, tune

    for pass_ in configs.PASSES:
        found = tune.candidates("sm90", 128, "bfloat16", pass_)
        assert found[0] == configs.default_tiles("sm90", 128, "bfloat16", pass_)  # the default is always timed
        assert len(set(found)) == len(found) <= 12
        assert all(t.part_stages == t.stages + (2 if pass_ == "dkdv" else 0) for t in found[1:])
    slow, fast = (tune.Trial("forward", configs.Tiles(128, n), ms={"causal": ms, "causal_document": ms / 2})
                  for n, ms in ((64, 2.0), (128, 1.0)))
    rejected = tune.Trial("forward", configs.Tiles(64, 64), rejected="spills 8 B")
    [row] = tune.best_rows("sm90", "NVIDIA H100", "attnbench tune triton_slices", {(128, "bfloat16"): [slow, fast, rejected]})
    assert (row["block_n"], row["pass"], row["machine"]) == (128, "forward", "NVIDIA H100")
    table = tmp_path / "tuned.json"
    table.write_text(json.dumps({"rows": [dict(row, block_n=64), dict(row, head_dim=64)]}))
    tune.write_table([row], table)
    rows = json.loads(table.read_text())["rows"]
    assert sorted((r["head_dim"], r["block_n"]) for r in rows) == [(64, 128), (128, 128)]  # replaced, kept
    for kwargs, message in [({"kernel": "flex"}, "tune knows"), ({"passes": ["sideways"]}, "unknown sideways"),
                            ({"dry_run": False}, "needs a CUDA device"), ({"head_dims": [96]}, "96 not supported")]:
        options = {"kernel": "triton_slices", "arch": None, "head_dims": [128], "dtypes": ["bf16"],
                   "passes": ["forward"], "dry_run": True, "command": "", **kwargs}
        kernel = options.pop("kernel")
        with pytest.raises(UserError, match=message):
            tune.run_tune(kernel, **options)


def test_tune_without_a_gpu_is_one_line_exit_2():
    proc = run_cli("tune", "triton_slices")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: tune times the kernels: it needs a CUDA device "
                                   "(--dry-run compiles and screens without one)")


def test_gpu_check_suite_is_the_gpu_paths_and_predicts_under_8_minutes():
    from attnbench.errors import UserError
    from attnbench.suite import load_suite

    path = ROOT / "suites" / "gpu-check.yaml"
    suite = load_suite(path, cuda_available=True)
    static = {name for name in MASKS.names() if not MASKS.get(name).dynamic}
    assert {c.mask.name for c in suite.cases} == static and len(static) == 13
    assert {c.kernel for c in suite.cases} == {"triton_slices", "flex", "sdpa_flash", "sdpa_cudnn"}
    assert {(c.shape.seqlen, c.dtype, c.device, c.check_accuracy) for c in suite.cases} == {
        (2048, "bfloat16", "cuda", True), (16384, "bfloat16", "cuda", True)}
    assert {c.pass_.value for c in suite.cases} == {"forward", "backward"} and len(suite.cases) == 208
    with pytest.raises(UserError, match="no CUDA device is available here"):
        load_suite(path, cuda_available=False)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict_offline.py"), str(path),
                           "--tflops", "bfloat16=400", "--tflops", "float32=25"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "120 run, 88 unsupported" in proc.stdout
    minutes = float(proc.stdout.split("predicted ")[1].split(" min")[0])
    assert 0 < minutes < 8
