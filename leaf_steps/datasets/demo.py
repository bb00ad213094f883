"""The embedded demo's split (library code shared by the demo's steps; the demo has no download adapter).

The demo's images and synthetic labels do not depend on the split (``leaf_steps.make_demo_dataset``
writes them with the split-free image list); ``leaf_steps.split_demo_dataset`` draws the split by
reference photo, so all versions of one photo share a split and no content leaks between train and
test: ``round(test_fraction * n_photos)`` photos (at least one, and at least one left for training),
drawn with ``split_seed``, go to ``test``; the rest to ``train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from leaf_steps.core.errors import ConfigError, InputError

MANIFEST_ORDER = ("image_id", "path", "mos", "split", "width", "height", "photo", "reference", "distortion", "level")


def resolve_split(settings: dict[str, Any]) -> dict[str, Any]:
    """``split_seed`` and ``test_fraction`` with defaults; a bad value raises ConfigError naming its key."""
    seed = settings.get("split_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"dataset.split_seed: must be a non-negative integer, got {seed!r}")
    frac = settings.get("test_fraction", 0.2)
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac < 1:
        raise ConfigError(f"dataset.test_fraction: must be a number in (0, 1), got {frac!r}")
    return {"split_seed": seed, "test_fraction": float(frac)}


def split_references(references: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """reference -> "train"/"test"; independent of the order references are listed in."""
    names = sorted(references)
    n_test = min(max(1, round(test_fraction * len(names))), len(names) - 1)
    test = set(np.random.default_rng(seed).permutation(names)[:n_test].tolist())
    return {name: ("test" if name in test else "train") for name in names}


def demo_manifest(
    images: pl.DataFrame, labels: pl.DataFrame, split_seed: int, test_fraction: float
) -> tuple[pl.DataFrame, dict[str, str]]:
    """The manifest (image list + labels + split by photo, in the image list's order) and photo -> split."""
    joined = images.join(labels, on="image_id", how="left", maintain_order="left")
    if joined["photo"].null_count():
        missing = joined.filter(pl.col("photo").is_null())["image_id"].head(3).to_list()
        raise InputError(f"demo labels lack image(s) of the image list, e.g. {missing}")
    splits = split_references(joined["photo"].unique().to_list(), test_fraction, split_seed)
    manifest = joined.with_columns(pl.col("photo").replace_strict(splits, return_dtype=pl.String).alias("split"))
    return manifest.select(MANIFEST_ORDER), splits
