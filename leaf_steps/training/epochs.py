"""What stage 1 keeps per epoch for few-shot checkpoint selection (``distill.selection: mos_subset``).

Kept apart from the selection rule (:mod:`leaf_steps.training.selection`) on purpose: distillation
imports only this module, so that editing the rule reruns the selections and calibrations, never
the (GPU-costly) distillation itself.
"""

from __future__ import annotations

import polars as pl

EPOCH_PREDICTION_SCHEMA = {"image_id": pl.String, "epoch": pl.Int32, "prediction": pl.Float64}


def candidate_epochs(epochs: int, every: int) -> list[int]:
    """Stage-1 epochs whose checkpoint is kept for few-shot selection: every ``every``-th, and the last."""
    if epochs < 1 or every < 1:
        raise ValueError(f"epochs ({epochs}) and every ({every}) must be >= 1")
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


def labelled_training_ids(manifest: pl.DataFrame) -> list[str]:
    """The images MOS subsets are drawn from (``sample_mos_subset``): the train split's images with a MOS."""
    return sorted(manifest.filter((pl.col("split") == "train") & pl.col("mos").is_not_null())["image_id"].to_list())
