#!/usr/bin/env bash
# The GPU checks of issue 11 in one script, for a machine with one CUDA GPU (not run yet: its
# steps are bounded by timeouts of 2, 5 and 9 minutes). Everything it measures lands in $OUT
# (default gpu-out):
#   inspect-launch.json  what Triton compiled for this GPU, from the real launches
#   tune.txt, tuned.json the tuning sweep and its rows (also merged into the package's table)
#   validate.txt         the suite's predicted duration on this GPU
#   results/             the run of suites/gpu-check.yaml (records, tables), with the tuned rows
# Then put the TFLOPs/s table, the ratios and the machine into benchmarks/triton_slices.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.csv"
attnbench env --json > "$OUT/env.json"
timeout 120 attnbench inspect triton_slices triton_slices_det --launch --json > "$OUT/inspect-launch.json"
timeout 300 attnbench tune triton_slices --head-dims 128 --dtypes bf16 | tee "$OUT/tune.txt"
cp attnbench/kernels/triton_slices/tuned.json "$OUT/tuned.json"
attnbench validate suites/gpu-check.yaml | tee "$OUT/validate.txt"
timeout 540 attnbench run suites/gpu-check.yaml --out "$OUT/results" | tee "$OUT/run.txt"
attnbench show latest --root "$OUT/results" > "$OUT/tables.txt"
