#!/usr/bin/env python3
"""Pair sampling (``leaf_steps.sample_pairs``) at the training-split sizes of the paper's datasets: time and
peak memory of the bottom-k sampler over all n(n-1) ordered pairs, one pair per training image (the default
``pairs.count``), side by side with the size of the score matrix it never holds at once.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_sample_pairs.py            # 7,000 and 14,000 ids
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_sample_pairs.py --n 2000 20000

Peak memory is what numpy and polars allocate during the call (tracemalloc), not the interpreter's.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leaf_steps.sample_pairs import sample_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[7_000, 14_000], help="training images")
    a = ap.parse_args()
    print(
        "| training images | ordered pairs | pairs drawn | time (s) | peak memory (MiB) | full score matrix (MiB) | peak / matrix |"  # noqa: E501
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in a.n:
        ids = [f"{k:08d}.jpg" for k in range(n)]
        tracemalloc.start()
        start = time.perf_counter()
        pairs = sample_pairs(ids, None, seed=0)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        matrix = n * (n - 1) * 8 / 2**20
        print(
            f"| {n:,} | {n * (n - 1):,} | {pairs.height:,} | {seconds:.2f} | {peak:.1f} | {matrix:,.0f} | {peak / matrix:.4f} |"  # noqa: E501
        )


if __name__ == "__main__":
    main()
