"""The `attnbench inspect` figures of triton_slices v1 (the "v1" rows of triton_slices.md).

v1 predates the launch interface, so this script takes v1's kernels, ops and schedule from
git (commit bb0b9b7) into a temporary package, captures the launches its ops make (meta
tensors, 64:8 heads, causal at 16K), and compiles and analyses them with this checkout's
inspect code. Run from the repository root:

    python benchmarks/inspect_v1.py sm90 bfloat16                       # v1 defaults
    python benchmarks/inspect_v1.py sm90 bfloat16 '{"block_n": 128, "bwd_block_m": 64}'
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from attnbench.inspect.compile import compile_launch
from attnbench.inspect.report import function_report
from attnbench.kernels.triton_launch import TritonLaunch
from attnbench.masks import build_mask

V1 = "bb0b9b7"
PACKAGE = "v1_triton_slices"


def load_v1(root: Path):
    package = root / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("kernels", "ops", "schedule"):
        text = subprocess.run(["git", "show", f"{V1}:attnbench/kernels/triton_slices/{name}.py"], capture_output=True,
                              text=True, check=True).stdout
        (package / f"{name}.py").write_text(text.replace("attnbench.kernels.triton_slices", PACKAGE))
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.kernels"), importlib.import_module(f"{PACKAGE}.ops")


class Capture:
    """Stands in for a jit function: ``fn[grid](...)`` records the launch instead of running it."""

    def __init__(self, fn, label, into):
        self.fn, self.label, self.into = fn, label, into

    def __getitem__(self, grid):
        def call(*args, num_warps=4, num_stages=3, **constexprs):
            self.into.append(TritonLaunch(self.label, self.fn, grid, args, constexprs, num_warps, num_stages,
                                          config={"block_m": constexprs.get("BLOCK_M"), "block_n": constexprs.get("BLOCK_N")}))
        return call


def main() -> None:
    arch, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    changes = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    with tempfile.TemporaryDirectory() as tmp:
        K, ops = load_v1(Path(tmp))
        launches: list[TritonLaunch] = []
        for name, label in [("fwd_kernel", "forward"), ("bwd_dkdv_kernel", "dkdv"), ("bwd_dq_kernel", "dq")]:
            setattr(K, name, Capture(getattr(K, name), label, launches))
        K.bwd_preprocess_kernel = Capture(K.bwd_preprocess_kernel, "delta", [])
        S, Hq, Hkv, D = 16384, 64, 8, 128
        q = torch.empty(1, Hq, S, D, dtype=dtype, device="meta")
        k = torch.empty(1, Hkv, S, D, dtype=dtype, device="meta")
        lse = torch.empty(1, Hq, S, device="meta")
        mask = build_mask("causal", S, {})
        for deterministic in (False, True):
            plan = ops.make_plan(mask, Hq, "meta", ops.default_config(D, deterministic=deterministic).with_(**changes))
            if not deterministic:
                ops._forward(q, k, k, plan, D ** -0.5)
            ops._backward(torch.empty_like(q), q, k, k, torch.empty_like(q), lse, plan, D ** -0.5)
        dkdv = [x for x in launches if x.label == "dkdv"]
        launches = [x for x in launches if x.label != "dkdv" or x is dkdv[0]]  # the atomic variant's dk/dv
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for launch in launches:
                f = function_report(launch, compile_launch(launch, arch))
                loops = [loop.buffers for loop in f.loops if loop.dots]
                print(f"{launch.label} {f.config['block_m']}x{f.config['block_n']} w{f.num_warps} s{f.num_stages}: "
                      f"{f.registers} registers, spills {f.spill_store_bytes}/{f.spill_load_bytes} B, "
                      f"{f.shared_bytes / 1024:.1f} KB shared, {f.blocks_per_sm} block/SM, dots "
                      f"{[d.instruction for d in f.dots]}, buffers {loops}, atomics {sorted({a.sem for a in f.atomics})}")


if __name__ == "__main__":
    main()
