"""Step: the training and selection curves of a run's students (see
:mod:`leaf_steps.evaluation.training_figures` for what each panel shows).

    python -m leaf_steps.plot_training_curves --stage1 leaf stage1/losses.parquet \\
        --stage2 leaf 0.1 0 ratio0.1/seed0/losses.parquet \\
        --selection leaf 0.1 0 ratio0.1/seed0/stage1_selection.parquet --out training_curves.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import read_parquet
from leaf_steps.evaluation.training_figures import (
    SELECTION_COLUMNS,
    STAGE1_COLUMNS,
    STAGE2_COLUMNS,
    training_curves,
)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage1", nargs=2, action="append", default=[], metavar=("VARIANT", "LOSSES"))
    ap.add_argument("--stage2", nargs=4, action="append", default=[], metavar=("VARIANT", "RATIO", "SEED", "LOSSES"))
    ap.add_argument(
        "--selection", nargs=4, action="append", default=[], metavar=("VARIANT", "RATIO", "SEED", "STAGE1_SELECTION")
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Training curves")
    a = ap.parse_args(argv)
    stage1 = [(v, read_parquet(p, STAGE1_COLUMNS)) for v, p in a.stage1]
    stage2 = [(v, r, s, read_parquet(p, STAGE2_COLUMNS)) for v, r, s, p in a.stage2]
    selections = [(v, r, s, read_parquet(p, SELECTION_COLUMNS)) for v, r, s, p in a.selection]
    training_curves(stage1, stage2, a.out, a.title, selections)


if __name__ == "__main__":
    run_step(main)
