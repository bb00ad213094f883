"""Evaluation metrics against hand-computed values."""

import math

import numpy as np
import polars as pl
import pytest

from leaf_steps.evaluation.common_set import Run, evaluate_runs, labelled_test_images
from leaf_steps.evaluation.correlation import plcc, srcc
from leaf_steps.evaluation.metrics import iqa_metrics, logistic4


def test_metrics_by_hand_three_points():
    # ranks (1,2,3) vs (3,1,2): d = (-2, 1, 1), SRCC = 1 - 6*6/(3*(9-1)) = -0.5
    # Pearson: cov sum = (-1)(1) + 0 + (1)(0) = -1; var sums 2 and 2 -> -1/2
    # Kendall: pairs (1,2) discordant, (1,3) discordant, (2,3) concordant -> (1-2)/3
    m = iqa_metrics(np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0]))
    assert m["srcc"] == pytest.approx(-0.5)
    assert m["plcc"] == pytest.approx(-0.5)
    assert m["krcc"] == pytest.approx(-1 / 3)
    # RMSE: residuals (-2, 1, 1) -> sqrt(6/3)
    assert m["rmse"] == pytest.approx(np.sqrt(2.0))


def test_linear_scale_change_keeps_correlations():
    pred = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    m = iqa_metrics(pred, 2 * pred)
    assert m["srcc"] == pytest.approx(1) and m["plcc"] == pytest.approx(1) and m["krcc"] == pytest.approx(1)
    assert m["rmse"] == pytest.approx(np.sqrt(11.0))  # residuals 1..5: sqrt(55/5)


def test_logistic_fit_recovers_monotone_nonlinearity():
    x = np.linspace(-3, 3, 60)
    y = logistic4(x, 90.0, 10.0, 0.5, 0.4)
    m = iqa_metrics(x, y)
    assert m["srcc"] == pytest.approx(1.0)
    assert m["plcc"] < 0.97  # the raw PLCC suffers from the S-shape
    assert m["plcc_logistic"] == pytest.approx(1.0, abs=1e-6)
    assert m["rmse_logistic"] < 1e-3


def test_constant_prediction_has_undefined_correlations_not_zero():
    # One implementation for the table, the epoch choices and the validation (evaluation.correlation):
    # a constant predictor's correlations are undefined (NaN), never reported as "no correlation".
    m = iqa_metrics(np.ones(5), np.arange(5.0))
    assert all(math.isnan(m[k]) for k in ("srcc", "plcc", "krcc", "plcc_logistic"))
    assert srcc(np.ones(5), np.arange(5.0)) != srcc(np.ones(5), np.arange(5.0))  # NaN
    assert math.isnan(plcc(np.arange(5.0), np.full(5, 3.0))) and math.isnan(srcc([1.0], [2.0]))
    assert srcc([1, 2, 3], [3, 2, 1]) == -1.0 and plcc([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_an_undefined_correlation_reaches_the_table_as_words_not_a_number():
    from leaf_steps.aggregate import markdown_table, summarize

    runs = pl.DataFrame(
        {
            "method": ["leaf", "leaf"],
            "ratio": [0.1, 0.1],
            "seed": [0, 1],
            "n": [9, 9],
            "srcc": [0.5, float("nan")],
            "plcc": [0.4, 0.6],
            "plcc_logistic": [0.4, 0.6],
            "krcc": [0.3, 0.3],
            "rmse": [1.0, 1.0],
            "rmse_logistic": [1.0, 1.0],
        }
    )
    table = markdown_table(summarize(runs), ["leaf"], None)
    assert "undefined (a run predicted a constant)" in table and "0.500 ± 0.141" in table  # PLCC cell still a number
    assert "nan" not in table.lower().replace("undefined", "")


def test_evaluate_uses_only_test_images_with_mos():
    manifest = pl.DataFrame(
        {
            "image_id": list("abcdef"),
            "split": ["train", "test", "test", "test", "test", "test"],
            "mos": [1.0, 1.0, 2.0, 3.0, 4.0, None],
        }
    )
    preds = pl.DataFrame({"image_id": list("abcdf"), "prediction": [9.0, 1.0, 2.0, 3.0, 7.0]})
    runs, lacking, _ = evaluate_runs(labelled_test_images(manifest), [Run("m", 0.0, None, preds)])
    m = runs.row(0, named=True)
    # "e" has MOS but no prediction; "a" is train; "f" has no MOS
    assert (m["n"], m["n_test"], m["n_missing"]) == (3, 4, 1)
    assert lacking["image_id"].to_list() == ["e"]
    assert m["srcc"] == pytest.approx(1.0)
