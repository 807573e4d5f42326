"""What `attnbench validate` would predict for a CUDA suite on a GPU we do not have.

`validate` calibrates the device it runs on (matmul TFLOPs/s per dtype), so a GPU suite cannot
be validated on a CPU machine. This script runs the same per-case prediction
(`attnbench.measure.predict.predict`) with matmul rates given on the command line (e.g. figures
measured on that GPU before, or its spec sheet), and the kernels' declared CUDA support in
place of an availability probe. It is an estimate from assumed rates: replace it with the
real `attnbench validate SUITE` on the GPU.

    python benchmarks/predict_offline.py suites/gpu-check.yaml --tflops bfloat16=600 --tflops float32=50
"""

from __future__ import annotations

import argparse

from attnbench.kernels import KERNELS
from attnbench.masks import MASKS, build_mask
from attnbench.measure.predict import predict, skip_reason
from attnbench.suite import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--tflops", action="append", default=[], help="dtype=TFLOPs/s of a dense matmul")
    parser.add_argument("--free-gib", type=float, default=80.0)
    args = parser.parse_args()
    rates = {k: float(v) for k, v in (item.split("=", 1) for item in args.tflops)}
    suite = load_suite(args.suite, profile=args.profile, cuda_available=True)
    total, counts = 0.0, {"run": 0, "unsupported": 0, "skipped": 0}
    for case in suite.cases:
        kernel = KERNELS.get(case.kernel)
        if kernel.support.get("cuda") is None or kernel.support["cuda"].reason_against(case):
            counts["unsupported"] += 1
            continue
        heads = case.shape.heads_q if MASKS.get(case.mask.name).dynamic else 1
        mask = build_mask(case.mask.name, case.shape.seqlen, case.mask.params, heads=heads)
        prediction = predict(case, kernel, mask, rates, int(args.free_gib * 2**30))
        if skip_reason(case, prediction):
            counts["skipped"] += 1
            continue
        counts["run"] += 1
        total += prediction.case_seconds or 0.0
    print(f"{len(suite.cases)} cases: {counts['run']} run, {counts['unsupported']} unsupported, "
          f"{counts['skipped']} skipped; predicted {total / 60:.1f} min at {rates} TFLOPs/s")


if __name__ == "__main__":
    main()
