"""Step: the teacher with a linear calibration: a least-squares line from teacher score to MOS, fitted on
one MOS subset (both roles), applied to the test split (paper Fig 2 (b, c)).

    python -m leaf_steps.teacher_linear --points teacher/<t>/points.parquet --manifest M \\
        --subset subsets/ratio0.1/seed0.parquet --out F

Output: image_id, prediction, teacher_score; the slope and intercept in the provenance.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_parquet
from leaf_steps.evaluation.teacher_baselines import fit_linear, zero_shot


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--subset", type=Path, required=True, help="the MOS subset the line is fitted on")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    points = read_parquet(a.points, ["image_id", "teacher_score", "error"])
    test = read_parquet(a.manifest, ["image_id", "split"]).filter(pl.col("split") == "test")
    slope, intercept = fit_linear(points, read_parquet(a.subset, ["image_id", "mos"]))
    preds = zero_shot(points, test).with_columns(prediction=pl.col("teacher_score") * slope + intercept)
    provenance = make_provenance(
        "teacher_linear",
        teacher=read_provenance(a.points).get("teacher"),
        slope=slope,
        intercept=intercept,
        subset=str(a.subset),
    )
    write_parquet(preds.select("image_id", "prediction", "teacher_score"), a.out, provenance)


if __name__ == "__main__":
    run_step(main)
