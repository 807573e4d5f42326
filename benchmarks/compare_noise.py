"""Does `attnbench compare` cry wolf on a loaded machine, and does it still catch a real slowdown?

With a CPU hog (a busy Python loop) running for the whole experiment, this makes PAIRS pairs
of smoke runs of the same code ("same") and PAIRS pairs where the current run has one kernel
made FACTOR slower on one mask ("slow", tests/plugins/slow_kernel.py: the kernel's forward
call spins for FACTOR of its own time), alternating. Each pair is compared twice: plain, and
with --confirm (the flagged cases measured again with the current run's code, the plugin
loaded again for a "slow" pair), and with --confirm --base-env (the base's code path, the
planted slowdown switched off, measured side by side with the current). It prints a line per pair and the totals, and writes every
comparison's JSON under OUT.

    python benchmarks/compare_noise.py --pairs 10 --out /tmp/compare_noise  # benchmarks/compare_smoke.yaml, naive+sdpa, full+causal

Counts: a false regression is a regressed case that was not slowed; a "slow" pair is caught
when every slowed case is regressed (named in the comparison) and counted as such.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the comparisons made of every pair: plain; --confirm against the base run's samples; --confirm
#: with the base's code path measured side by side (the current tree with the planted slowdown
#: switched off: a no-op for a "same" pair)
VARIANTS = {
    "plain": [],
    "confirm": ["--confirm"],
    "side-by-side": ["--confirm", "--base-env", "ATTNBENCH_TEST_SLOW_FACTOR"],
}
ATTNBENCH = [sys.executable, "-m", "attnbench"]


def slow_env(kernel: str, mask: str, factor: float) -> dict[str, str]:
    return {"ATTNBENCH_PLUGINS": "tests.plugins.slow_kernel", "ATTNBENCH_TEST_SLOW_KERNEL": kernel,
            "ATTNBENCH_TEST_SLOW_MASK": mask, "ATTNBENCH_TEST_SLOW_FACTOR": str(factor)}


def attnbench(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env}
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(args)}  # env {env}\n")
        handle.flush()
        done = subprocess.run([*ATTNBENCH, *args], cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=handle, text=True)
    return done


def one_run(root: Path, suite: str, filters: list[str], env: dict[str, str], log: Path) -> Path:
    before = set(root.iterdir()) if root.exists() else set()
    done = attnbench(["run", suite, *filters, "--out", str(root)], env, log)
    made = [p for p in root.iterdir() if p not in before and (p / "run.json").exists()]
    if done.returncode != 0 or len(made) != 1:
        raise SystemExit(f"run failed (exit {done.returncode}); see {log}")
    return made[0]


def compare(base: Path, current: Path, env: dict[str, str], log: Path, extra: list[str]) -> dict:
    done = attnbench(["compare", str(base), str(current), "--format", "json", *extra], env, log)
    if done.returncode not in (0, 1):
        raise SystemExit(f"compare failed (exit {done.returncode}); see {log}")
    return json.loads(done.stdout)


def verdict(result: dict, slowed: set[tuple[str, str, str]]) -> dict:
    """Regressed cases split into slowed (expected) and false, and whether all slowed are caught."""
    def is_slowed(c):
        key = c["key"]
        return (key.get("kernel"), key.get("mask", {}).get("name") if isinstance(key.get("mask"), dict)
                else key.get("mask"), key.get("pass")) in slowed

    regressed = [c for c in result["cases"] if c["state"] == "regressed"]
    expected = [c for c in result["cases"] if is_slowed(c)]
    return {
        "exit": result["exit_code"],
        "false": [c["label"] for c in regressed if not is_slowed(c)],
        "caught": [c["label"] for c in regressed if is_slowed(c)],
        "slowed": len(expected),
        "noisy": sum(c["state"] == "noisy" for c in result["cases"]),
        "drift": (result.get("drift") or {}).get("ratio"),
    }


def recompare(args) -> None:
    """The plain comparison of every stored pair under OUT, made again by this code."""
    slowed = {(args.slow_kernel, args.slow_mask, "forward")}
    totals = {"same": {"false": 0, "caught": 0}, "slow": {"false": 0, "caught": 0}}
    for root in sorted(p for p in args.out.iterdir() if p.is_dir()):
        kind = root.name.split("-", 1)[1]
        runs = sorted(p for p in root.iterdir() if (p / "run.json").exists())
        if len(runs) < 2:
            continue
        v = verdict(compare(runs[0], runs[1], {}, args.out / "recompare-log.txt", []), slowed if kind == "slow" else set())
        totals[kind]["false"] += len(v["false"])
        totals[kind]["caught"] += kind == "slow" and v["slowed"] > 0 and len(v["caught"]) == v["slowed"]
        print(f"{root.name}: exit {v['exit']}, {len(v['false'])} false {v['false']}, caught {len(v['caught'])}/{v['slowed']}, "
              f"{v['noisy']} noisy", flush=True)
    print(json.dumps({"recompare": str(args.out), "totals": totals}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10, help="pairs of each kind")
    parser.add_argument("--out", type=Path, default=Path("/tmp/compare_noise"))
    parser.add_argument("--suite", default="benchmarks/compare_smoke.yaml")
    parser.add_argument("--kernels", default="naive,sdpa")
    parser.add_argument("--masks", default="full,causal")
    parser.add_argument("--rounds", type=int, default=0, help="--rounds for the runs (0: the suite's)")
    parser.add_argument("--slow-kernel", default="sdpa")
    parser.add_argument("--slow-mask", default="causal")
    parser.add_argument("--factor", type=float, default=0.25)
    parser.add_argument("--no-hog", action="store_true", help="without the CPU hog")
    parser.add_argument("--variants", default="plain,side-by-side", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--recompare", action="store_true",
                        help="measure nothing: compare OUT's stored pairs again (plain) with the code installed now")
    args = parser.parse_args()
    if args.recompare:
        return recompare(args)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    filters = ["--kernels", args.kernels, "--masks", args.masks] + (["--rounds", str(args.rounds)] if args.rounds else [])
    # the plugin slows the kernel's forward call: the forward cases of that kernel and mask
    slowed = {(args.slow_kernel, args.slow_mask, "forward")}
    hog = None if args.no_hog else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    variants = {how: VARIANTS[how] for how in args.variants.split(",")}
    totals = {kind: {how: {"false": 0, "caught": 0} for how in variants} for kind in ("same", "slow")}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the hog is killed too
    start = time.time()
    try:
        for pair in range(args.pairs):
            for kind in ("same", "slow"):
                env = slow_env(args.slow_kernel, args.slow_mask, args.factor) if kind == "slow" else {}
                root = args.out / f"{pair:02d}-{kind}"
                base = one_run(root, args.suite, filters, {}, log)
                current = one_run(root, args.suite, filters, env, log)
                line = [f"pair {pair + 1:2d} {kind}:"]
                for how, extra in variants.items():
                    result = compare(base, current, env, log, extra)
                    (root / f"compare-{how}.json").write_text(json.dumps(result, indent=1))
                    v = verdict(result, slowed if kind == "slow" else set())
                    caught = kind == "slow" and v["slowed"] > 0 and len(v["caught"]) == v["slowed"]
                    totals[kind][how]["false"] += len(v["false"])
                    totals[kind][how]["caught"] += caught
                    line.append(f"{how}: exit {v['exit']}, {len(v['false'])} false {v['false']}, "
                                f"caught {len(v['caught'])}/{v['slowed']}, {v['noisy']} noisy, drift {v['drift']:.3f};"
                                if v["drift"] else f"{how}: exit {v['exit']}, {len(v['false'])} false, "
                                f"caught {len(v['caught'])}/{v['slowed']}, {v['noisy']} noisy;")
                print(" ".join(line), flush=True)
    finally:
        if hog is not None:
            hog.kill()
    print(json.dumps({"pairs": args.pairs, "minutes": round((time.time() - start) / 60, 1), "totals": totals}), flush=True)


if __name__ == "__main__":
    main()
