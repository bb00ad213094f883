"""Step: per teacher, the histogram of the confidence (Eq 5) of its scored pairs, with the filter
threshold tau and the share of pairs it keeps.

    python -m leaf_steps.plot_pair_confidence --pairs standin teacher/standin/pairs.parquet --tau 0.1 \\
        --out pair_confidence.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import read_parquet
from leaf_steps.evaluation.training_figures import PAIR_COLUMNS, pair_confidence


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs=2, action="append", required=True, metavar=("TEACHER", "SCORED_PAIRS"))
    ap.add_argument("--tau", type=float, default=None, help="confidence threshold; omit when pairs are not filtered")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Teacher pair confidence")
    a = ap.parse_args(argv)
    pair_confidence([(t, read_parquet(p, PAIR_COLUMNS)) for t, p in a.pairs], a.tau, a.out, a.title)


if __name__ == "__main__":
    run_step(main)
