"""Sizes of the per-seed MOS subsets (paper Sec. 3.2.3): how many labelled training images a ratio
makes MOS-visible, how many of them are held out for calibration's epoch choice, and the smallest
subset calibration can use. Shared by the sampling step, the config check and the cost estimate."""

from __future__ import annotations

import math

MIN_TRAIN, MIN_VAL = 2, 2


def subset_sizes(n: int, ratio: float, val_fraction: float) -> tuple[int, int]:
    """(MOS images drawn, of which calib_val) for ``ratio`` of ``n`` labelled training images."""
    k = int(round(ratio * n))
    return k, int(math.ceil(val_fraction * k)) if val_fraction > 0 else 0
