"""Step: the teacher's zero-shot predictions on the test split: its expected score (Eq 2, 5..1) as the
prediction (paper Fig 2 (a)), in the shape of a student's predictions (image_id, prediction).

    python -m leaf_steps.teacher_zero_shot --points teacher/<t>/points.parquet --manifest M --out F
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_parquet
from leaf_steps.evaluation.teacher_baselines import zero_shot


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    points = read_parquet(a.points, ["image_id", "teacher_score", "error"])
    test = read_parquet(a.manifest, ["image_id", "split"]).filter(pl.col("split") == "test")
    preds = zero_shot(points, test).select("image_id", "prediction")
    write_parquet(preds, a.out, make_provenance("teacher_zero_shot", teacher=read_provenance(a.points).get("teacher")))


if __name__ == "__main__":
    run_step(main)
