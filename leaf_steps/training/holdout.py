"""Stage 1's MOS-free held-out images: the share of the training images distillation keeps out of
training to pick its epoch by teacher agreement (``distill.holdout_fraction``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holdout_count(n: int, fraction: float) -> int:
    """How many of ``n`` candidates are held out: round(fraction * n), at least one when
    fraction > 0, never more than n - 2; none below three candidates."""
    if fraction <= 0 or n < 3:
        return 0
    return min(n - 2, max(1, round(fraction * n)))


def holdout_ids(candidates: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``holdout_count`` of ``candidates``."""
    ids = sorted(candidates)
    n = holdout_count(len(ids), fraction)
    if n == 0:
        return set()
    perm = np.random.default_rng([seed, 1]).permutation(len(ids))
    return {ids[i] for i in perm[:n]}
