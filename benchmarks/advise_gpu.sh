#!/usr/bin/env bash
# The GPU figures of benchmarks/advise.md, for one node of 8 CUDA GPUs (not run: no GPU was
# lent to issue 13). NCCL profile, the local step measured alone, the CP suite twice at
# W = 8 (its larger worlds are skipped on one node), then the check of each run calibrated
# on the other and the paper-scale table priced with the measured figures. Results in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-advise}
mkdir -p "$OUT"
attnbench env --json > "$OUT/env.json"
attnbench netbench --out "$OUT/nccl.json" | tee "$OUT/netbench.txt"
attnbench run suites/cp_local.yaml --out "$OUT/results" | tee "$OUT/cp_local.txt"
KERNEL=$(ls -t "$OUT/results" | head -1)
attnbench run suites/cp.yaml --out "$OUT/results" | tee "$OUT/cp_a.txt"
A=$(ls -t "$OUT/results" | head -1)
attnbench run suites/cp.yaml --out "$OUT/results" | tee "$OUT/cp_b.txt"
B=$(ls -t "$OUT/results" | head -1)
for pair in "$A $B" "$B $A"; do
  set -- $pair
  attnbench advise --check "$1" --calibrate "$2" --kernel-run "$KERNEL" --network "$OUT/nccl.json" --root "$OUT/results" \
    | tee "$OUT/check-$1.txt"
done
python benchmarks/advise_paper.py --kernel-run "$OUT/results/$KERNEL" --network "$OUT/nccl.json" | tee "$OUT/paper-measured.md"
