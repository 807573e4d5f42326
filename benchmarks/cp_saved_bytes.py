"""Bytes autograd keeps for backward per rank (the worker's cp.rank_saved_bytes) for the rings,
at fixed tokens per rank (2048; heads 8:2, d=32, float32, causal: local q+k+v = 3 MiB).

    python benchmarks/cp_saved_bytes.py        (from the checkout, its .venv active)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnbench.cases import Case, CPSpec, MaskChoice, Pass, Shape  # noqa: E402
from tests.cp_harness import run_cases  # noqa: E402

METHODS = ("ring_p2p", "usp", "loongtrain")

if __name__ == "__main__":
    out = {}
    for world in (2, 4, 8):
        cases = [Case(kernel="naive", mask=MaskChoice(name="causal"), dtype="float32", pass_=Pass.forward_backward,
                      shape=Shape(batch=1, heads_q=8, heads_kv=2, head_dim=32, seqlen=2048 * world),
                      check_accuracy=False, cp=CPSpec(method=m, world_size=world)) for m in METHODS]
        outcomes = run_cases(cases, world, [False] * len(cases))
        out[world] = {c.cp.method: (o["cp"]["rank_saved_bytes"], o["cp"]["plan"]) for c, o in zip(cases, outcomes)}
    for m in METHODS:
        cells = ", ".join(f"W={w}: {max(out[w][m][0]) / 2**20:.2f} MiB (min {min(out[w][m][0]) / 2**20:.2f}; "
                          f"u={out[w][m][1]['ulysses_degree']}, rings {out[w][m][1]['rings']})" for w in out)
        print(f"{m}: {cells}")
