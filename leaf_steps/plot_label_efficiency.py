"""Step: the label-efficiency figure (paper Fig 4) from the run's summary.

python -m leaf_steps.plot_label_efficiency --summary summary/summary.parquet --out figures/label_efficiency.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import read_parquet
from leaf_steps.evaluation.result_figures import label_efficiency


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Label efficiency")
    a = ap.parse_args(argv)
    label_efficiency(read_parquet(a.summary), a.out, a.title)


if __name__ == "__main__":
    run_step(main)
