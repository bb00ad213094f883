"""IQA evaluation metrics: SRCC, KRCC, PLCC (raw and after the VQEG 4-parameter logistic), RMSE."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import optimize

from leaf_steps.evaluation.correlation import krcc, plcc, srcc

log = logging.getLogger("leaf.metrics")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG monotonic logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -50, 50)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(pred: np.ndarray, mos: np.ndarray) -> np.ndarray | None:
    """Logistic-mapped predictions (same length as ``pred``), or None if the fit fails.

    The VQEG start is [max y, min y, mean x, std x / 4]. The fit runs on standardised x, where
    that start is [max y, min y, 0, 1/4]: MINPACK's finite-difference step is relative to each
    parameter, so a start like mean x = 1e-16 would freeze b3.
    """
    if len(pred) < 5:  # 4 parameters need more points than that to mean anything
        return None
    z = (pred - np.mean(pred)) / np.std(pred)
    p0 = [float(np.max(mos)), float(np.min(mos)), 0.0, 0.25]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, z, mos, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError, TypeError) as exc:
        log.warning("4-parameter logistic fit failed (%s); reporting raw PLCC for plcc_logistic", exc)
        return None
    return logistic4(z, *params)


def iqa_metrics(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if pred.shape != mos.shape or pred.ndim != 1:
        raise ValueError(f"pred and mos must be 1-d of equal length, got {pred.shape} and {mos.shape}")
    if len(pred) < 3:
        raise ValueError(f"need at least 3 images to compute correlations, got {len(pred)}")
    if np.ptp(pred) == 0:
        log.warning("constant predictions over %d images: SRCC, PLCC and KRCC are undefined (NaN)", len(pred))
    fitted = fit_logistic4(pred, mos) if np.ptp(pred) > 0 else None
    fitted = pred if fitted is None else fitted
    return {
        "n": len(pred),
        "srcc": srcc(pred, mos),
        "plcc": plcc(pred, mos),
        "plcc_logistic": plcc(fitted, mos),
        "krcc": krcc(pred, mos),
        "rmse": float(np.sqrt(np.mean((pred - mos) ** 2))),
        "rmse_logistic": float(np.sqrt(np.mean((fitted - mos) ** 2))),
    }
