"""Build cost of every static mask at S = 1,048,576: ``python -m attnbench.masks.bench [S]``.

Prints build seconds (uncached, first build after a warm-up of the histograms), tracemalloc
peak MB and the number of slices.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from attnbench.masks.mask import MASKS


def measure(name: str, seqlen: int) -> tuple[float, float, int, int | None]:
    family = MASKS.get(name)
    tracemalloc.start()
    t0 = time.perf_counter()
    mask = family.build(seqlen)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, mask.num_slices, mask.num_documents


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    seqlen = int(argv[0]) if argv else 1 << 20
    names = [n for n, f in MASKS.items() if not f.dynamic]
    for n in names:  # warm-up: imports, histogram files
        MASKS.get(n).build(4096)
    print(f"static masks at S = {seqlen:,} (uncached build)")
    print(f"{'mask':<24}{'seconds':>10}{'peak MB':>10}{'slices':>9}{'docs':>7}")
    for n in names:
        seconds, peak, slices, docs = measure(n, seqlen)
        print(f"{n:<24}{seconds:>10.4f}{peak:>10.2f}{slices:>9}{'-' if docs is None else docs:>7}")


if __name__ == "__main__":
    main()
