"""Teacher baselines on the test split, in the same shape as student predictions.

* zero_shot: the teacher's expected score (Eq 2, 5..1) as the prediction (Fig 2 (a)).
* linear: a least-squares line from teacher score to MOS fitted on the MOS subset (all of
  D_MOS, both roles), i.e. the "linear calibration with a small MOS subset" of Fig 2 (b, c).
Output: image_id, prediction (+ teacher_score for the linear one). Failed teacher rows are skipped.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from leaf_steps.cli import run_step
from leaf_steps.errors import InputError
from leaf_steps.io import make_provenance, read_parquet, read_provenance, write_parquet


def _teacher_on(points: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    return ids.join(points.filter(pl.col("error").is_null()).select("image_id", "teacher_score"),
                    on="image_id", how="inner")


def zero_shot(points: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    return _teacher_on(points, test.select("image_id")).with_columns(prediction=pl.col("teacher_score"))


def fit_linear(points: pl.DataFrame, subset: pl.DataFrame) -> tuple[float, float]:
    fit_rows = _teacher_on(points, subset.select("image_id", "mos"))
    if fit_rows.height < 2 or fit_rows["teacher_score"].n_unique() < 2:
        raise InputError(f"linear teacher calibration needs >= 2 distinct teacher scores in the subset, "
                         f"got {fit_rows.height} rows")
    slope, intercept = np.polyfit(fit_rows["teacher_score"].to_numpy(), fit_rows["mos"].to_numpy(), 1)
    return float(slope), float(intercept)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["zero_shot", "linear"])
    ap.add_argument("--points", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--subset", type=Path, help="MOS subset (linear mode)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    points = read_parquet(a.points, ["image_id", "teacher_score", "error"])
    test = read_parquet(a.manifest, ["image_id", "split"]).filter(pl.col("split") == "test")
    teacher = read_provenance(a.points).get("teacher")
    if a.mode == "zero_shot":
        preds = zero_shot(points, test).select("image_id", "prediction")
        meta = {}
    else:
        if a.subset is None:
            raise InputError("linear mode needs --subset")
        slope, intercept = fit_linear(points, read_parquet(a.subset, ["image_id", "mos"]))
        preds = zero_shot(points, test).with_columns(prediction=pl.col("teacher_score") * slope + intercept)
        preds = preds.select("image_id", "prediction", "teacher_score")
        meta = {"slope": slope, "intercept": intercept, "subset": str(a.subset)}
    write_parquet(preds, a.out, make_provenance(f"teacher_baselines.{a.mode}", teacher=teacher, **meta))


if __name__ == "__main__":
    run_step(main)
