"""The one SRCC / PLCC / KRCC of the project: the evaluation table, the stage-1 epoch choice and the
calibration's validation all call these.

A correlation with a constant vector (or fewer than 2 values) is undefined: it is NaN here, never 0,
so that a constant predictor is never reported as "no correlation" and never wins an epoch choice.
scipy is not called on such input (it would warn and return NaN itself).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and bool(np.ptp(x) > 0) and bool(np.ptp(y) > 0)


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two 1-d arrays of equal length, got {x.shape} and {y.shape}")
    return x, y


def srcc(x, y) -> float:
    """Spearman rank correlation; NaN when undefined."""
    x, y = _as_pair(x, y)
    return float(stats.spearmanr(x, y).statistic) if _defined(x, y) else math.nan


def plcc(x, y) -> float:
    """Pearson linear correlation; NaN when undefined."""
    x, y = _as_pair(x, y)
    return float(stats.pearsonr(x, y).statistic) if _defined(x, y) else math.nan


def krcc(x, y) -> float:
    """Kendall rank correlation (tau-b); NaN when undefined."""
    x, y = _as_pair(x, y)
    return float(stats.kendalltau(x, y).statistic) if _defined(x, y) else math.nan


def finite_or_none(value: float | None) -> float | None:
    """For Parquet columns and JSON: an undefined value is stored as null."""
    return None if value is None or not math.isfinite(value) else float(value)
