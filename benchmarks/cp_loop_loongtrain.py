"""N runs of the W = 8 loongtrain backward case (cpu-profile shape: 8:2 heads, d=32, 128 tokens
per rank, naive; full, causal, causal_document in turn) through the real launcher: one JSON
line per run with its status, duration, accuracy and resolved plan (detail when not ok).

    python benchmarks/cp_loop_loongtrain.py 50
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attnbench.cases import Budget, Case, CPSpec, MaskChoice, Pass, Shape
from attnbench.cp.execute import execute_cp_case
from attnbench.runner.execute import CaseContext
n = int(sys.argv[1])
masks = ["full", "causal", "causal_document"]
ctx = CaseContext(run_id="loop", matmul_tflops={"float32": 0.05})
for i in range(n):
    case = Case(kernel="naive", mask=MaskChoice(name=masks[i % 3]), shape=Shape(batch=1, heads_q=8, heads_kv=2, head_dim=32, seqlen=1024),
                dtype="float32", pass_=Pass.backward,
                budget=Budget(warmup_seconds=0.0, measure_seconds=0.05, min_repeats=2, max_repeats=5, case_seconds=60),
                cp=CPSpec(method="loongtrain", world_size=8, timeout_seconds=120, scaling="weak"))
    t = time.time()
    r = execute_cp_case(case, ctx)
    acc = r.accuracy.ok if r.accuracy else None
    print(json.dumps({"i": i, "mask": masks[i % 3], "status": r.status.value, "s": round(time.time() - t, 1), "accuracy_ok": acc,
                      "plan": r.cp.plan if r.cp else None, "reason": r.reason, "detail": (r.detail or "")[-2000:] if r.status.value != "ok" else ""}), flush=True)
