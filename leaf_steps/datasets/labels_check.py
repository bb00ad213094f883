"""Is the labelled test split large enough for its SRCC/PLCC to mean anything? (Config validation and
the dataset step both say so when it is not.) Imports nothing from the package, so that the dataset
step's code hash does not depend on more than it uses.
"""

from __future__ import annotations

import math

# Below this many labelled test images a rank correlation is too uncertain to compare methods.
MIN_MEANINGFUL_TEST = 50
SPEARMAN_SE_FACTOR = 1.03  # Fieller, Hartley & Pearson (1957): var(atanh r_s) ~ 1.06 / (n - 3)


def srcc_interval(srcc: float, n: int) -> tuple[float, float]:
    """Approximate 95% interval of a Spearman correlation measured on ``n`` images (Fisher z)."""
    half = 1.96 * SPEARMAN_SE_FACTOR / math.sqrt(n - 3)
    z = math.atanh(srcc)
    return math.tanh(z - half), math.tanh(z + half)


def small_test_split_warning(n_test: int) -> str | None:
    """A warning when the labelled test split is too small for its SRCC/PLCC to mean much, else None."""
    if n_test >= MIN_MEANINGFUL_TEST:
        return None
    if n_test == 0:
        return (
            "no labelled test images: nothing can be evaluated against MOS (label more images, or raise "
            "dataset.test_fraction)"
        )
    if n_test <= 4:
        return (
            f"only {n_test} labelled test image(s): SRCC/PLCC on so few images mean nothing (label more "
            f"images, or raise dataset.test_fraction; {MIN_MEANINGFUL_TEST}+ test images are advisable)"
        )
    lo, hi = srcc_interval(0.8, n_test)
    return (
        f"only {n_test} labelled test images: an SRCC of 0.80 measured on them has a 95% interval of about "
        f"{lo:.2f}..{hi:.2f}, so differences between methods mean little (label more images, or raise "
        f"dataset.test_fraction; {MIN_MEANINGFUL_TEST}+ test images are advisable)"
    )
