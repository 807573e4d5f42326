"""torch's CPU thread count against a busy core: the smoke suite with --threads 1 and 2, alternated.

    python benchmarks/threads.py [--rounds 2] [--hog] [--out /tmp/attnbench-threads]

With --hog a busy Python loop runs beside the runs (one core of a 2-core machine taken, as
by another job). Prints one markdown row per thread count: the sum of the case medians, the
median of each case's p80/p20, the share of cases whose slowest sample is over 10x their
fastest, and the slowest sample seen; the sums' ratio is the figure benchmarks/threads.md
quotes. Runs are alternated so that both counts see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["run", "suites/smoke.yaml", "--kernels", "naive,sdpa,sdpa_math"]


def run_once(threads: int, out: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    before = set(out.glob("*")) if out.exists() else set()
    subprocess.run([sys.executable, "-m", "attnbench", *COMMAND, "--threads", str(threads), "--out", str(out)],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    [run_dir] = set(out.glob("*")) - before
    return run_dir


def timings(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    return [r["timing"] for r in records if r["status"] == "ok" and r.get("timing")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hog", action="store_true", help="keep one core busy with a Python loop")
    parser.add_argument("--out", type=Path, default=Path("/tmp/attnbench-threads"))
    args = parser.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    seen: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for _ in range(args.rounds):
            for threads in (2, 1):
                seen[threads] += timings(run_once(threads, args.out / f"threads{threads}"))
    finally:
        if hog is not None:
            hog.kill()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; hog: {'yes' if args.hog else 'no'}; "
          f"rounds: {args.rounds}\n")
    print("| threads | cases | sum of medians (ms) | median p80/p20 | slowest > 10x fastest | slowest sample (ms) |")
    print("|---|---|---|---|---|---|")
    sums = {}
    for threads, ts in seen.items():
        sums[threads] = sum(t["median_s"] for t in ts) * 1e3
        spread = statistics.median(t["p80_s"] / t["p20_s"] for t in ts)
        wild = sum(max(t["samples_s"]) > 10 * min(t["samples_s"]) for t in ts) / len(ts)
        worst = max(max(t["samples_s"]) for t in ts) * 1e3
        print(f"| {threads} | {len(ts)} | {sums[threads]:.1f} | {spread:.2f} | {wild:.0%} | {worst:.1f} |")
    print(f"\nsum of medians, 2 threads / 1 thread: {sums[2] / sums[1]:.2f}x")


if __name__ == "__main__":
    main()
