"""triton_slices: its host schedule here (fast, no Triton), and the kernel itself in Triton's
interpreter in a subprocess (``tests/interp_triton_slices.py`` with ``TRITON_INTERPRET=1``).

The interpreter must be switched on before anything in the process imports triton (torch's
compiler may import it early), hence the separate process. Run the kernel tests directly with
``TRITON_INTERPRET=1 python -m pytest -q tests/interp_triton_slices.py``. Marked ``triton``
(``pytest -m "not triton"`` leaves the slow one out).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from attnbench.kernels.triton_slices.schedule import build_schedule, render_dense
from attnbench.masks import MASKS, build_mask
from attnbench.masks.convert import dense
from tests.helpers import ROOT, run_cli
from tests.interp_triton_slices import SEQLEN, SMALL


def test_every_mask_is_covered():
    assert set(SMALL) == set(MASKS.names())


def _mask(name: str, seqlen: int = SEQLEN, heads: int = 4):
    return build_mask(name, seqlen, SMALL[name], heads=heads if MASKS.get(name).dynamic else 1)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_schedule_renders_exactly_the_mask(name):
    """Host schedule only (no Triton): FULL blocks + PARTIAL rules == the dense mask, and the
    transposed (per key block) schedule lists exactly the same blocks and rules."""
    mask = _mask(name, heads=3)
    expected = dense(mask).numpy()
    for bm, bn in [(32, 32), (16, 64), (64, 16)]:
        s = build_schedule(mask.slices, mask.seqlen, mask.heads, bm, bn)
        assert (render_dense(s) == expected).all(), (name, bm, bn)
        rows, cols = [], []
        for o, n_rows, out, transposed in ((s.by_q, s.n_qblocks, rows, False), (s.by_k, s.n_kblocks, cols, True)):
            for r in range(s.heads * n_rows):
                h, blk = divmod(r, n_rows)
                for e in range(o.full_ptr[r], o.full_ptr[r + 1]):
                    pair = (blk, o.full_idx[e]) if not transposed else (o.full_idx[e], blk)
                    out.append((h, *pair, ()))
                for e in range(o.part_ptr[r], o.part_ptr[r + 1]):
                    pair = (blk, o.part_idx[e]) if not transposed else (o.part_idx[e], blk)
                    out.append((h, *pair, tuple(sorted(s.rule_idx[o.part_r0[e]:o.part_r1[e]]))))
        assert sorted(rows) == sorted(cols)
        assert s.n_full + s.n_partial == len(rows)


def test_schedule_visits_only_touched_blocks():
    mask = build_mask("sliding_window_causal", 4096, {"window": 256})
    s = build_schedule(mask.slices, 4096, 1, 128, 128)
    # block row qb (rows 128 qb ...) sees keys from 128 qb - 256: block qb - 2 partially (its
    # upper triangle), qb - 1 fully, qb partially (the diagonal); nothing else of the 32 x 32
    assert (s.blocks_visited, s.n_full, s.n_partial) == (1 + 2 + 30 * 3, 31, 32 + 30)


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
