"""Are there enough labelled images for what the config asks? Checked at config validation where the
counts are knowable (the published benchmark counts; a folder's MOS CSV), else by the steps.

A MOS ratio applies to the labelled *training* images: ``ratio`` of them are drawn for calibration,
``calibration.val_fraction`` of those held out to select the epoch (sample_mos_subsets), and the
test split (``dataset.test_fraction`` of the labelled images; KonIQ-10k's official split) is never
touched. A ratio that leaves fewer than 2 calibration images or 2 held-out images cannot be run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        return ("no labelled test images: nothing can be evaluated against MOS (label more images, or raise "
                "dataset.test_fraction)")
    if n_test <= 4:
        return (f"only {n_test} labelled test image(s): SRCC/PLCC on so few images mean nothing (label more "
                f"images, or raise dataset.test_fraction; {MIN_MEANINGFUL_TEST}+ test images are advisable)")
    lo, hi = srcc_interval(0.8, n_test)
    return (f"only {n_test} labelled test images: an SRCC of 0.80 measured on them has a 95% interval of about "
            f"{lo:.2f}..{hi:.2f}, so differences between methods mean little (label more images, or raise "
            f"dataset.test_fraction; {MIN_MEANINGFUL_TEST}+ test images are advisable)")


def ratio_problems(n_train_labelled: int, ratios: list[float], val_fraction: float, where: str) -> list[str]:
    """One message per MOS ratio that leaves too few calibration or held-out images (sample_mos_subsets' rule)."""
    from leaf_steps.sample_mos_subsets import MIN_TRAIN, MIN_VAL, subset_sizes

    out = []
    for ratio in ratios:
        if ratio <= 0:
            continue
        k, n_val = subset_sizes(n_train_labelled, ratio, val_fraction)
        if k - n_val < MIN_TRAIN or (val_fraction > 0 and n_val < MIN_VAL):
            out.append(f"calibration.ratios: {ratio:g} of the {n_train_labelled} labelled training images {where} is "
                       f"{k} image(s) ({k - n_val} to calibrate on, {n_val} held out by calibration.val_fraction="
                       f"{val_fraction:g}); need >= {MIN_TRAIN} and >= {MIN_VAL}. A ratio applies to the labelled "
                       "training images: label more images, or use a larger ratio")
    return out


def known_label_counts(config: Mapping[str, Any]) -> tuple[int, int, str] | None:
    """(labelled training images, labelled test images, where the count comes from), or None when unknowable
    before the dataset step runs. Published counts for the benchmarks; a folder's MOS CSV rows."""
    from leaf_steps.datasets import get_dataset
    from leaf_steps.datasets.common import read_csv_strings, test_count

    ds = config["dataset"]
    name = ds["name"]
    fraction = ds.get("test_fraction", 0.2)
    if name == "demo":
        return None
    options = ds.get("options") or {}
    if name == "folder":
        csv = options.get("mos_csv")
        if not csv or not Path(str(csv)).expanduser().is_file():
            return None if csv else (0, 0, "(dataset.options.mos_csv not set)")
        n = read_csv_strings(Path(str(csv)).expanduser()).height
        n_test = test_count(n, fraction)
        return n - n_test, n_test, f"({n} rows in {csv})"
    adapter = get_dataset(name)
    if name == "koniq10k" and options.get("split", "official") == "official":
        counts = adapter.OFFICIAL_COUNTS
        return counts["train"], counts["test"], "(KonIQ-10k's official split)"
    published = options.get("expected_count") or getattr(adapter, "PUBLISHED_IMAGES", None) or \
        getattr(adapter, "PUBLISHED_LABELLED", None)
    if not published:
        return None
    n_test = test_count(published, fraction)
    return published - n_test, n_test, f"(of {published} published labelled images)"
