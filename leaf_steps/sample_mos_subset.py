"""Per-seed MOS subset D_MOS for one ratio (paper Sec. 3.2.3 and 4.2).

``ratio`` of the training images (those with MOS) are made MOS-visible, the rest stay
MOS-invisible. For one seed the subsets are nested across ratios (the 10% subset is a
prefix of the 30% one, drawn from one seeded permutation), which keeps label-efficiency
curves free of resampling noise. Inside the subset, ``val_fraction`` of the images are
held out (role ``calib_val``) for checkpoint selection during calibration; the rest
(``calib_train``) are trained on. No test image is ever in a subset.
Output: image_id, role, mos.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet
from leaf_steps.training.mos_subsets import MIN_TRAIN, MIN_VAL, subset_sizes


def sample_subset(train: pl.DataFrame, ratio: float, seed: int, val_fraction: float) -> pl.DataFrame:
    labelled = train.filter(pl.col("mos").is_not_null()).sort("image_id")
    n = labelled.height
    k, n_val = subset_sizes(n, ratio, val_fraction)
    if k - n_val < MIN_TRAIN or (val_fraction > 0 and n_val < MIN_VAL):
        raise InputError(
            f"ratio {ratio} of {n} labelled training images gives {k} MOS images "
            f"({k - n_val} train / {n_val} val); need >= {MIN_TRAIN} train and >= {MIN_VAL} val"
        )
    order = np.random.default_rng(seed).permutation(n)[:k]
    chosen = labelled[order.tolist()]
    val_idx = set(np.random.default_rng([seed, k]).choice(k, size=n_val, replace=False).tolist())
    roles = ["calib_val" if i in val_idx else "calib_train" for i in range(k)]
    return chosen.select("image_id", "mos").with_columns(pl.Series("role", roles)).select("image_id", "role", "mos")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--ratio", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--val-fraction", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    manifest = read_parquet(a.manifest, ["image_id", "split", "mos"])
    train = manifest.filter(pl.col("split") == "train")
    subset = sample_subset(train, a.ratio, a.seed, a.val_fraction)
    write_parquet(
        subset,
        a.out,
        make_provenance(
            "sample_mos_subset",
            ratio=a.ratio,
            seed=a.seed,
            val_fraction=a.val_fraction,
            n_train_labelled=int(train["mos"].is_not_null().sum()),
            n_subset=subset.height,
            n_calib_val=int((subset["role"] == "calib_val").sum()),
        ),
    )


if __name__ == "__main__":
    run_step(main)
