"""The paper-scale table of benchmarks/advise.md: 1M tokens on 64 GPUs (8 nodes x 8), the 13
static masks of suites/cp.yaml (their parameters), GQA 64:8, head dim 128, bf16, forward +
backward: every CP method and parameter set predicted by `attnbench advise`, the best per mask.

    python benchmarks/advise_paper.py                                  # published figures (default)
    python benchmarks/advise_paper.py --kernel-run RUN --network FILE  # measured ones, when at hand

The same as running `attnbench advise --mask M [--set k=v ...] --seqlen 1M --gpus 64
--gpus-per-node 8 --heads 64:8 --head-dim 128 --dtype bf16` once per mask.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from attnbench.advise import api

ROOT = Path(__file__).resolve().parent.parent


def masks_of_cp_suite() -> list[tuple[str, dict]]:
    document = yaml.safe_load((ROOT / "suites" / "cp.yaml").read_text())
    out = []
    for entry in document["sweep"]["masks"]:
        if isinstance(entry, str):
            out.append((entry, {}))
        else:
            params = dict(entry)
            out.append((params.pop("name"), params))
    return out


def best_of(advice, method: str):
    ranked = [o for o in advice.ranked if o.method == method]
    return min(ranked, key=lambda o: o.seconds) if ranked else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-run")
    parser.add_argument("--kernel-figures")
    parser.add_argument("--network")
    args = parser.parse_args()
    methods = ("ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain")
    print("| mask | predicted best | fwd + bwd ms | why | runner-up | " + " | ".join(f"best {m} ms" for m in methods)
          + " | best's GiB/rank | candidates |")
    print("|---" * (6 + len(methods) + 1) + "|")
    start = time.perf_counter()
    for name, params in masks_of_cp_suite():
        advice = api.advise_question(mask=name, mask_params=params, seqlen=1 << 20, gpus=64, gpus_per_node=8,
                                     heads=(64, 8), head_dim=128, dtype="bf16", kernel=None, kernel_run=args.kernel_run,
                                     figures=args.kernel_figures, network=args.network, memory_bytes=None, root=ROOT / "results")
        ranked = advice.ranked
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        label = name + "".join(f", {k}={v}" for k, v in params.items())
        runner = f"{second.label} (+{100 * (second.seconds / best.seconds - 1):.1f}%)" if second else "-"
        cells = []
        for m in methods:
            o = best_of(advice, m)
            cells.append(f"{o.seconds * 1e3:.0f}" if o else "-")
        print(f"| {label} | {best.label} | {best.seconds * 1e3:.0f} | {best.reason} | {runner} | " + " | ".join(cells)
              + f" | {best.peak_bytes / 2**30:.2f} | {len(ranked)} |")
    print()
    print(f"compute: {advice.compute_source}")
    print(f"network: {advice.network_source}")
    for note in advice.notes:
        print(f"note: {note}")
    print(f"({time.perf_counter() - start:.0f} s for the 13 masks)")


if __name__ == "__main__":
    main()
