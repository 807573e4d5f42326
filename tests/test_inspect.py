"""`attnbench inspect`: offline sm80/sm90 compiles of triton_slices (v2's claims: every dot on
wgmma, no spills, 3 pipeline buffers per loop, forward <= 200 registers, relaxed atomics),
a plugin Triton kernel through the same interface, the TTGIR reader on hand-written IR, and
one-line errors.

The compiles share one Triton cache per test session (a few seconds per function, cold)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from attnbench.inspect.occupancy import occupancy
from attnbench.inspect.ttgir import parse
from tests.helpers import ROOT, run_cli

pytest.importorskip("triton")

PLUGIN = {"ATTNBENCH_PLUGINS": "tests.plugins.triton_plugin", "COLUMNS": "200"}


@pytest.fixture(scope="session")
def triton_cache(tmp_path_factory):
    return {"TRITON_CACHE_DIR": str(tmp_path_factory.mktemp("triton-cache")), "TRITON_INTERPRET": "0"}


def inspect_json(env, *args):
    proc = run_cli("inspect", *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["kernel"]: {f["label"]: f for f in r["functions"]} for r in json.loads(proc.stdout)["reports"]}


def readme_example(prefix: str) -> list[str]:
    """The arguments of README's example command line starting with ``prefix``."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(prefix))
    return shlex.split(line)[2:]


@pytest.fixture(scope="session")
def sm90(triton_cache):
    """README's example, as written there (with --json)."""
    args = readme_example("attnbench inspect triton_slices triton_slices_det --arch sm90")
    assert args[-1] == "--json"
    return inspect_json(triton_cache, *args[:-1])


def test_sm90_defaults_every_dot_on_wgmma_no_spills_three_buffers(sm90):
    functions = {**sm90["triton_slices"], "dq": sm90["triton_slices_det"]["dq"]}
    assert set(functions) >= {"forward", "delta", "dkdv", "dq"}
    for label in ("forward", "dkdv", "dq"):
        f = functions[label]
        assert f["dots"] and {d["instruction"] for d in f["dots"]} == {"wgmma"}, (label, f["dots"])
        assert f["spill_store_bytes"] == f["spill_load_bytes"] == 0, label
        loops = [loop for loop in f["loops"] if loop["dots"]]
        assert len(loops) == 2, (label, loops)  # full-block runs and partial entries
        assert all(loop["buffers"] >= 3 for loop in loops), (label, loops)
        assert f["blocks_per_sm"] >= 1 and not f["findings"], (label, f["findings"])
    assert functions["forward"]["registers"] <= 200
    # dk/dv: 5 dots per block (s^T, dv, dp^T, dk, dq^T) in each of the two loops; dq added relaxed
    assert len(functions["dkdv"]["dots"]) == 10
    assert {(a["op"], a["sem"], a["element"]) for a in functions["dkdv"]["atomics"]} == {("fadd", "relaxed", "f32")}
    assert not sm90["triton_slices_det"]["dkdv"]["atomics"]


@pytest.fixture
def offline(triton_cache, monkeypatch):
    """In this process (no CLI start-up): the session's Triton cache, compiled not interpreted."""
    for key, value in triton_cache.items():
        monkeypatch.setenv(key, value)
    from attnbench.kernels.triton_slices import kernels

    assert not kernels.INTERPRETED


def test_sm80_compiles_with_mma_sync(offline):
    from attnbench.inspect import build_query, inspect_kernels

    query = build_query(arch="sm80", dtype="bf16", head_dim=128, pass_="forward", mask="causal", seqlen=16384,
                        heads="64:8", launch=False)
    [report] = inspect_kernels(["triton_slices"], query)
    [f] = report.functions
    assert f.label == "forward" and {d.instruction for d in f.dots} == {"mma.sync"}
    assert f.spill_store_bytes == 0 and not f.atomics


def test_a_128x128_forward_compiles_without_spills(offline, monkeypatch):
    """The configuration space has a 128 x 128 forward (3 stages) that fits an H100 SM without spills."""
    from attnbench.inspect.compile import compile_launch
    from attnbench.inspect.report import function_report
    from attnbench.kernels import KERNELS
    from attnbench.kernels.triton_launch import LaunchQuery
    from attnbench.kernels.triton_slices import configs

    wide = configs.default_tiles("sm90", 128, "bfloat16", "forward").with_(block_n=128)
    monkeypatch.setattr(configs, "default_tiles", lambda *key: wide)
    [launch] = KERNELS.get("triton_slices").triton_launches(LaunchQuery(passes=("forward",)))
    f = function_report(launch, compile_launch(launch, "sm90"))
    assert (f.config["block_m"], f.config["block_n"], f.config["stages"]) == (128, 128, 3)
    assert f.spill_store_bytes == 0 and f.blocks_per_sm == 1
    assert [loop.buffers for loop in f.loops if loop.dots] == [3, 3]


def test_plugin_kernel_through_the_same_interface(triton_cache):
    proc = run_cli("inspect", "triton_dense_plugin", "--head-dim", "64", env={**triton_cache, **PLUGIN})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    dot = next(line for line in lines if "triton_plugin.py:36" in line)  # s = q k^T
    assert "64x64x64 bf16: wgmma" in dot
    assert any("loop triton_plugin.py:32: 3 buffers" in line for line in lines)  # num_stages=3, affine
    assert any("atomic triton_plugin.py:50 fadd f32 acq_rel gpu" in line for line in lines)
    assert any("acq_rel (relaxed is enough for a sum)" in line for line in lines)  # and flagged


def test_a_kernel_without_launches_is_refused_in_one_line():
    proc = run_cli("inspect", "naive")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: kernel 'naive' does not declare Triton launches (only Triton-based kernels can be inspected)"


@pytest.mark.parametrize("changes, message", [
    ({"arch": "sm70"}, "unknown arch 'sm70'"),
    ({"pass_": "sideways"}, "--pass must be one of"),
    ({"heads": "64:7"}, "must be a multiple"),
    ({"heads": "many"}, "--heads must be HQ:HKV"),
    ({"launch": True}, "--launch runs the kernels: it needs a CUDA device"),
    ({"dtype": "int8"}, "--dtype: unknown dtype"),
    ({"mask": "no_such_mask"}, "unknown mask"),
])
def test_bad_options_are_user_errors(changes, message):
    from attnbench.errors import UserError
    from attnbench.inspect import build_query

    options = {**dict(arch=None, dtype="bf16", head_dim=128, pass_="both", mask="causal", seqlen=1024, heads="64:8",
                      launch=False), **changes}
    with pytest.raises(UserError, match=re.escape(message)):
        build_query(**options)


def test_shapes_the_kernel_cannot_take_are_user_errors(offline):
    from attnbench.errors import UserError
    from attnbench.inspect import build_query, inspect_kernels

    query = build_query(arch=None, dtype="bf16", head_dim=96, pass_="both", mask="causal", seqlen=1024,
                        heads="8:8", launch=False)
    with pytest.raises(UserError, match="head_dim 96 not supported"):
        inspect_kernels(["triton_slices"], query)


TTGIR = """\
#loc = loc("/k.py":1:1)
#mma = #ttg.nvidia_mma<{versionMajor = 2, versionMinor = 0, warpsPerCTA = [4, 1], instrShape = [16, 8]}>
#loc3 = loc("/k.py":10:5)
#loc4 = loc("/k.py":20:9)
#loc5 = loc("/k.py":30:9)
#loc6 = loc(callsite(#loc4 at #loc3))
#loc7 = loc("/k.py":40:5)
module {
  tt.func public @f() {
    %k = ttg.local_alloc : () -> !ttg.memdesc<3x64x128xbf16, #shared, #smem, mutable> loc(#loc3)
    %b = ttg.local_alloc : () -> !ttg.memdesc<2x1xi64, #shared1, #smem, mutable> loc(#loc3)
    %r:2 = scf.for %i = %c0 to %n step %c1 iter_args(%a = %z) -> (tensor<128x64xf32, #mma>)  : i32 {
      %kk = ttg.memdesc_index %k[%i] : !ttg.memdesc<3x64x128xbf16> -> !ttg.memdesc<64x128xbf16> loc(#loc3)
      %s = ttng.warp_group_dot %q, %kk, %a {inputPrecision = 0 : i32, isAsync = true} : !ttg.memdesc<128x128xbf16, #shared, #smem> * !ttg.memdesc<128x64xbf16, #shared1, #smem> -> tensor<128x64xf32, #mma1> loc(#loc6)
      scf.yield %s : tensor<128x64xf32, #mma1> loc(#loc3)
    } loc(#loc3)
    %t = scf.for %j = %c0 to %n step %c1 iter_args(%a = %z) -> (tensor<32x128xf32, #mma>)  : i32 {
      %d = tt.dot %x, %y, %a, inputPrecision = tf32 : tensor<32x128xbf16, #ttg.dot_op<{opIdx = 0, parent = #mma, kWidth = 2}>> * tensor<128x128xbf16, #ttg.dot_op<{opIdx = 1, parent = #mma, kWidth = 2}>> -> tensor<32x128xf32, #mma> loc(#loc5)
      %e = tt.atomic_rmw fadd, acq_rel, gpu, %p, %d, %m : (tensor<32x128x!tt.ptr<f32>, #blocked>, tensor<32x128xf32, #blocked>, tensor<32x128xi1, #blocked>) -> tensor<32x128xf32, #blocked> loc(#loc5)
      scf.yield %d : tensor<32x128xf32, #mma> loc(#loc7)
    } loc(#loc7)
    tt.return loc(#loc)
  } loc(#loc)
} loc(#loc)
"""


def test_ttgir_reader_finds_dots_loops_buffers_and_atomics():
    module = parse(TTGIR)
    wgmma, mma = module.dots
    assert (wgmma.instruction, wgmma.m, wgmma.n, wgmma.k, wgmma.operand, wgmma.loop) == ("wgmma", 128, 64, 128, "bf16", 0)
    assert wgmma.site.label() == "k.py:20<10"  # inlined: the callee's line, then the call site
    assert (mma.instruction, mma.m, mma.n, mma.k, mma.loop) == ("mma.sync", 32, 128, 128, 1)
    pipelined, plain = module.loops
    assert pipelined.site.line == 10 and pipelined.tile_buffers == 3 and pipelined.dots == 1
    assert [b.name for b in pipelined.buffers] == ["k"]  # the i64 barrier is not a tile buffer
    assert plain.site.line == 40 and plain.tile_buffers == 1 and plain.dots == 1
    [atomic] = module.atomics
    assert (atomic.op, atomic.sem, atomic.scope, atomic.element, atomic.loop) == ("fadd", "acq_rel", "gpu", "f32", 1)


def test_occupancy_limits():
    assert occupancy("sm90", 255, 1024, 8).blocks_per_sm == 1  # 256 regs x 256 threads = all 64K
    assert occupancy("sm90", 128, 1024, 4).blocks_per_sm == 4
    small = occupancy("sm90", 32, 100 * 1024, 4)
    assert (small.blocks_per_sm, small.limited_by) == (2, "shared memory")
    assert occupancy("sm80", 64, 170 * 1024, 4).blocks_per_sm == 0  # over the 163 KB a block may have
    assert occupancy("sm90", 64, 170 * 1024, 4).blocks_per_sm == 1


def test_split_rows_reduction_compiles_without_spills(offline):
    """causal_sink_window splits the sink's key block: its partial sums are added by a kernel of their own."""
    from attnbench.inspect.compile import compile_launch
    from attnbench.inspect.report import function_report
    from attnbench.kernels import KERNELS
    from attnbench.kernels.triton_launch import LaunchQuery

    launches = KERNELS.get("triton_slices").triton_launches(LaunchQuery(mask="causal_sink_window", passes=("backward",)))
    [reduce] = [launch for launch in launches if launch.label == "dkdv_reduce"]
    f = function_report(reduce, compile_launch(reduce, "sm90"))
    assert f.spill_store_bytes == 0 and f.blocks_per_sm >= 1
