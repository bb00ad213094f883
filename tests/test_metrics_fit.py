"""The VQEG logistic mapping behind plcc_logistic / rmse_logistic, against independent oracles:
the closed form of the 4-parameter logistic, a least-squares fit done here with scipy from the true
parameters, and the degenerate inputs the evaluation step can meet (constant predictions, few
images, predictions on a tiny or a huge scale)."""

import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from leaf_steps.evaluation.metrics import fit_logistic4, iqa_metrics, logistic4


def closed_form(x, b1, b2, b3, b4):
    return b2 + (b1 - b2) / (1.0 + math.exp(-(x - b3) / abs(b4)))


@pytest.mark.parametrize(
    "x, b",
    [
        (0.3, (90.0, 10.0, 0.5, 0.4)),
        (-1.2, (5.0, 1.0, -1.0, -0.7)),
        (2.0, (1.0, 4.0, 2.5, 0.2)),
        (0.0, (80.0, 20.0, 0.0, 1.0)),
    ],
)
def test_logistic4_is_the_vqeg_closed_form(x, b):
    assert float(logistic4(np.array([x]), *b)[0]) == pytest.approx(closed_form(x, *b), rel=1e-12)


def test_logistic4_is_a_step_at_zero_width_and_stays_finite_far_out():
    x = np.array([-3.0, -1e-3, 1e-3, 3.0])
    # |b4| = 0: a step from b2 to b1 at b3, without dividing by zero.
    np.testing.assert_allclose(logistic4(x, 7.0, 2.0, 0.0, 0.0), [2.0, 2.0, 7.0, 7.0], atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp: the exponent is clipped
        far = logistic4(np.array([-1e6, 1e6]), 9.0, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(far, [1.0, 9.0], atol=1e-12)


def own_fit(pred, mos, true_params):
    """Least squares from the generating parameters (on standardised predictions): the optimum."""
    z = (pred - pred.mean()) / pred.std()
    b1, b2, b3, b4 = true_params
    start = [b1, b2, (b3 - pred.mean()) / pred.std(), b4 / pred.std()]
    params, _ = optimize.curve_fit(logistic4, z, mos, p0=start, maxfev=20000)
    return logistic4(z, *params)


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e6, 1.0), (0.0, 1e-9), (3.0, 1e4)])
def test_fit_reaches_the_least_squares_optimum_at_any_prediction_scale(offset, scale):
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(-2.0, 2.0, 50))
    params = (85.0, 15.0, 0.3, 0.35)
    mos = logistic4(t, *params) + rng.normal(0, 2.0, t.size)
    pred = offset + scale * t
    fitted = fit_logistic4(pred, mos)
    assert fitted is not None and fitted.shape == mos.shape
    want = own_fit(t, mos, params)
    np.testing.assert_allclose(fitted, want, atol=1e-3)
    m = iqa_metrics(pred, mos)
    assert m["rmse_logistic"] == pytest.approx(np.sqrt(np.mean((want - mos) ** 2)), rel=1e-4)
    assert m["plcc_logistic"] == pytest.approx(stats.pearsonr(want, mos).statistic, abs=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)), rel=1e-12)
    assert m["plcc_logistic"] > m["plcc"]  # the S-shape costs the raw PLCC


def test_five_images_are_enough_for_a_fit_four_are_not():
    t = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    mos = logistic4(t, 4.5, 1.5, 0.2, 0.5)
    assert fit_logistic4(t, mos) is not None
    assert fit_logistic4(t[:4], mos[:4]) is None
    m = iqa_metrics(t[:4], mos[:4])  # no fit: the logistic columns fall back to the raw ones
    assert m["plcc_logistic"] == m["plcc"] and m["rmse_logistic"] == m["rmse"]


def test_small_ranges_of_predictions_and_mos_are_still_fitted():
    # Predictions spanning 0.4 and MOS spanning 0.8 (a 0..1 MOS scale): nothing is "too flat" to fit.
    t = np.linspace(-2.0, 2.0, 30)
    mos = logistic4(t, 0.9, 0.1, 0.0, 0.3)
    m = iqa_metrics(0.1 * t, mos)
    assert m["plcc_logistic"] == pytest.approx(1.0, abs=1e-6) and m["plcc"] < 0.99
    assert m["rmse_logistic"] < 1e-4


def test_constant_predictions_give_undefined_correlations_and_the_raw_rmse():
    mos = np.arange(6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no correlation of a constant is attempted
        m = iqa_metrics(np.full(6, 2.0), mos)
    assert all(np.isnan([m["srcc"], m["plcc"], m["krcc"], m["plcc_logistic"]]))
    assert m["rmse_logistic"] == m["rmse"] == pytest.approx(np.sqrt(np.mean((2.0 - mos) ** 2)))
    assert m["n"] == 6


def test_integer_inputs_are_not_computed_in_integer_arithmetic():
    pred = np.array([10, 200, 30, 250, 5], dtype=np.uint8)
    mos = np.array([200, 20, 250, 0, 90], dtype=np.uint8)
    m = iqa_metrics(pred, mos)
    as_float = iqa_metrics(pred.astype(float), mos.astype(float))
    assert m == pytest.approx(as_float)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred.astype(float) - mos.astype(float)) ** 2)))


@pytest.mark.parametrize(
    "pred, mos, message",
    [
        (np.ones((3, 2)), np.ones((3, 2)), "1-d of equal length"),
        (np.ones(4), np.ones(5), "1-d of equal length, got \\(4,\\) and \\(5,\\)"),
        (np.ones(2), np.ones(2), "need at least 3 images to compute correlations, got 2"),
    ],
)
def test_bad_shapes_are_named(pred, mos, message):
    with pytest.raises(ValueError, match=message):
        iqa_metrics(pred, mos)
