"""Few-shot stage-1 checkpoint selection for one MOS subset (paper Sec. 3.2.3).

    python -m leaf_steps.select_stage1 --epoch-predictions stage1/epoch_predictions.parquet \\
        --stage1-losses stage1/losses.parquet --subset subsets/ratio<r>/seed<s>.parquet --out selection.parquet

``--epoch-predictions`` (from ``distill``): image_id, epoch, prediction -- the stage-1 outputs of
every candidate epoch on the labelled training images. ``--subset``: image_id, role, mos. Only the
subset's ``calib_val`` rows are read for the choice; the test split never is. ``--stage1-losses``
gives the teacher rule's epoch (column ``selected``), used when the subset cannot rank the epochs
(:mod:`leaf_steps.training.selection` says when, and why the criterion is SRCC + PLCC).

Output: one row per candidate epoch (epoch, n_images, val_srcc, val_plcc, score, selected), with
the chosen epoch, the rule actually applied, any fallback reason and a hash of the calib_val
images in the provenance (``calibrate`` checks it against its own subset).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet
from leaf_steps.training.selection import calib_val_hash, select_on_calib_val

log = logging.getLogger("leaf.select_stage1")


def teacher_epoch(losses: pl.DataFrame, source: str) -> int:
    chosen = losses.filter(pl.col("selected"))
    if chosen.height != 1:
        raise InputError(f"{source}: expected exactly one selected epoch, found {chosen.height}")
    return int(chosen["epoch"][0])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epoch-predictions", type=Path, required=True)
    ap.add_argument("--stage1-losses", type=Path, required=True)
    ap.add_argument("--subset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    preds = read_parquet(a.epoch_predictions, ["image_id", "epoch", "prediction"])
    subset = read_parquet(a.subset, ["image_id", "role", "mos"])
    fallback = teacher_epoch(read_parquet(a.stage1_losses, ["epoch", "selected"]), str(a.stage1_losses))
    choice = select_on_calib_val(preds, subset, fallback, source=str(a.epoch_predictions))
    if choice.reason:
        log.warning("select_stage1: %s; using the teacher rule's epoch %d", choice.reason, choice.epoch)
    log.info("select_stage1: epoch %d (%s) for %s\n%s", choice.epoch, choice.rule, a.subset, choice.table)
    write_parquet(
        choice.table,
        a.out,
        make_provenance(
            "select_stage1",
            selected_epoch=choice.epoch,
            rule=choice.rule,
            reason=choice.reason,
            teacher_epoch=fallback,
            subset=str(a.subset),
            calib_val_hash=calib_val_hash(subset),
            epoch_predictions=str(a.epoch_predictions),
        ),
    )


if __name__ == "__main__":
    run_step(main)
