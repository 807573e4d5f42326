"""N launches at W = 8 of the stand-in `ok` worker (init_process_group, one all_reduce) through
the real launcher: one JSON line per launch, whether it had to be relaunched (ranks stuck in
init); the record's detail (with every rank's stacks) goes to DIR/init_hang_<i>.txt.

    python benchmarks/cp_loop_init.py 100 /tmp
"""
import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT)
from tests.test_cp_launch import cp_case, ctx
from attnbench.cp import CP_METHODS
from attnbench.cp.execute import execute_cp_case
module = importlib.import_module("tests.plugins.cp_standin")
if "standin" not in CP_METHODS: CP_METHODS.add("standin", module.StandIn())
n, out_dir = int(sys.argv[1]), Path(sys.argv[2])
for i in range(n):
    t = time.time()
    r = execute_cp_case(cp_case(world=8, timeout=60.0, mode="ok"), ctx())
    relaunched = "first launch:" in (r.detail or "")
    print(json.dumps({"i": i, "status": r.status.value, "s": round(time.time() - t, 1), "reason": r.reason, "relaunched": relaunched}), flush=True)
    if r.status.value != "ok" or relaunched:
        (out_dir / f"init_hang_{i}.txt").write_text(r.detail or "")
