"""Teacher baselines on the test split, in the same shape as student predictions (steps
:mod:`leaf_steps.teacher_zero_shot` and :mod:`leaf_steps.teacher_linear`).

* zero_shot: the teacher's expected score (Eq 2, 5..1) as the prediction (Fig 2 (a)).
* linear: a least-squares line from teacher score to MOS fitted on the MOS subset (all of
  D_MOS, both roles), i.e. the "linear calibration with a small MOS subset" of Fig 2 (b, c).
Output: image_id, prediction (+ teacher_score for the linear one). Failed teacher rows are skipped.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from leaf_steps.core.errors import InputError


def _teacher_on(points: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    return ids.join(
        points.filter(pl.col("error").is_null()).select("image_id", "teacher_score"), on="image_id", how="inner"
    )


def zero_shot(points: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    return _teacher_on(points, test.select("image_id")).with_columns(prediction=pl.col("teacher_score"))


def fit_linear(points: pl.DataFrame, subset: pl.DataFrame) -> tuple[float, float]:
    fit_rows = _teacher_on(points, subset.select("image_id", "mos"))
    if fit_rows.height < 2 or fit_rows["teacher_score"].n_unique() < 2:
        raise InputError(
            f"linear teacher calibration needs >= 2 distinct teacher scores in the subset, got {fit_rows.height} rows"
        )
    slope, intercept = np.polyfit(fit_rows["teacher_score"].to_numpy(), fit_rows["mos"].to_numpy(), 1)
    return float(slope), float(intercept)
