"""Which stage-1 epoch a calibration starts from (paper Sec. 3.2.3).

Two rules, chosen by ``distill.selection``:

* ``teacher`` (MOS-free): the epoch with the lowest distillation loss on held-out training images
  and their pairs (``leaf_steps.distill``). The label-free model always uses it: without MOS there
  is nothing else to select on.
* ``mos_subset`` (the paper's few-shot protocol, the default): for each MOS subset D_MOS (one ratio
  and seed), the epoch whose stage-1 outputs agree best with MOS on that subset's held-out images
  (role ``calib_val``), never on the test split. The criterion is SRCC + PLCC of the raw stage-1
  outputs against MOS on those images -- the same criterion calibration uses to pick its own epoch.
  Both correlations are invariant to a positive affine map of the outputs, so the teacher-score
  units of stage 1 need no calibration to be compared with MOS. Ties go to the earliest epoch; an
  epoch whose correlations are undefined (constant outputs) is never preferred.

The candidates are the epochs whose checkpoint distillation kept
(:func:`leaf_steps.training.epochs.candidate_epochs`): every
``distill.checkpoint_every``-th epoch and the last. With fewer than ``MIN_SELECTION_IMAGES`` calib_val
images, or when no candidate has defined correlations, the subset cannot rank the epochs and the
teacher rule's epoch is used instead; the selection records that fallback and its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import stable_hash
from leaf_steps.evaluation.correlation import finite_or_none, plcc, srcc

RULES = ("mos_subset", "teacher")
# Below three images a correlation is +-1 or undefined: it cannot rank epochs.
MIN_SELECTION_IMAGES = 3
SELECTION_SCHEMA = {
    "epoch": pl.Int32,
    "n_images": pl.Int32,
    "val_srcc": pl.Float64,
    "val_plcc": pl.Float64,
    "score": pl.Float64,
    "selected": pl.Boolean,
}


def correlation_score(srcc: float | None, plcc: float | None) -> float:
    """SRCC + PLCC; an undefined correlation makes the epoch never preferred."""
    if srcc is None or plcc is None or not (math.isfinite(srcc) and math.isfinite(plcc)):
        return -math.inf
    return srcc + plcc


def _correlations(pred: np.ndarray, mos: np.ndarray) -> tuple[float | None, float | None]:
    return finite_or_none(srcc(pred, mos)), finite_or_none(plcc(pred, mos))


def calib_val_hash(subset: pl.DataFrame) -> str:
    """Identifies the held-out images (and their MOS) a selection was made on."""
    val = subset.filter(pl.col("role") == "calib_val").sort("image_id")
    return stable_hash([[i, m] for i, m in zip(val["image_id"].to_list(), val["mos"].to_list(), strict=True)])


@dataclass(frozen=True)
class Stage1Selection:
    epoch: int
    rule: str  # "mos_subset", or "teacher" when the subset could not rank the epochs
    reason: str | None  # why the teacher rule was used instead, else None
    table: pl.DataFrame  # SELECTION_SCHEMA: the criterion of every candidate epoch


def select_on_calib_val(
    epoch_predictions: pl.DataFrame, subset: pl.DataFrame, teacher_epoch: int, source: str = "epoch predictions"
) -> Stage1Selection:
    """The stage-1 epoch for one MOS subset, chosen on its calib_val images only.

    ``epoch_predictions``: image_id, epoch, prediction (stage-1 outputs of every candidate epoch on
    the labelled training images); ``subset``: image_id, role, mos; ``teacher_epoch``: the MOS-free
    rule's epoch, used when the subset cannot rank the epochs.
    """
    val = subset.filter(pl.col("role") == "calib_val").select("image_id", "mos").sort("image_id")
    epochs = sorted(epoch_predictions["epoch"].unique().to_list())
    if not epochs:
        raise InputError(f"{source}: no epochs")
    dup = epoch_predictions.filter(pl.struct("image_id", "epoch").is_duplicated())
    if dup.height:
        raise InputError(
            f"{source}: image_id {dup['image_id'][0]!r} has more than one prediction at epoch {dup['epoch'][0]}"
        )
    preds = epoch_predictions.filter(pl.col("image_id").is_in(val["image_id"].implode()))
    rows, best_epoch, best_score = [], None, -math.inf
    for epoch in epochs:
        at = val.join(
            preds.filter(pl.col("epoch") == epoch).select("image_id", "prediction"), on="image_id", how="left"
        )
        missing = at.filter(pl.col("prediction").is_null() | ~pl.col("prediction").is_finite())["image_id"]
        if missing.len():
            raise InputError(
                f"{source}: epoch {epoch} has no finite prediction for {missing.len()} calib_val "
                f"image(s) of the MOS subset (first: {missing[0]!r}); the stage-1 epoch predictions "
                "must cover every labelled training image"
            )
        srcc, plcc = _correlations(at["prediction"].to_numpy(), at["mos"].to_numpy())
        score = correlation_score(srcc, plcc)
        rows.append(
            {
                "epoch": epoch,
                "n_images": at.height,
                "val_srcc": srcc,
                "val_plcc": plcc,
                "score": score if math.isfinite(score) else None,
            }
        )
        if score > best_score:  # strict: ties keep the earliest epoch
            best_epoch, best_score = epoch, score
    reason = None
    if val.height < MIN_SELECTION_IMAGES:
        reason = (
            f"the subset has {val.height} calib_val image(s); at least {MIN_SELECTION_IMAGES} are needed to rank epochs"
        )
    elif best_epoch is None:
        reason = "no candidate epoch has defined SRCC/PLCC on calib_val (constant outputs or MOS)"
    epoch, rule = (teacher_epoch, "teacher") if reason else (best_epoch, "mos_subset")
    table = pl.DataFrame([{**r, "selected": r["epoch"] == epoch} for r in rows], schema=SELECTION_SCHEMA)
    return Stage1Selection(int(epoch), rule, reason, table)


def find_epoch_checkpoint(checkpoints: Sequence[tuple[str, int | None]], epoch: int) -> str:
    """The checkpoint path of ``epoch`` among (path, epoch recorded in its metadata)."""
    for path, recorded in checkpoints:
        if recorded == epoch:
            return path
    kept = sorted({e for _, e in checkpoints if e is not None})
    raise InputError(f"no stage-1 checkpoint of epoch {epoch} among the {len(checkpoints)} given (epochs kept: {kept})")
