"""Evaluate one prediction file on the test split: SRCC, PLCC (raw and 4-parameter logistic), KRCC, RMSE.

Output: one row with method, ratio, seed, n, the metrics, and n_missing (test images
with MOS but no prediction, e.g. failed teacher rows).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.cli import run_step
from leaf_steps.errors import InputError
from leaf_steps.io import make_provenance, read_parquet, write_parquet
from leaf_steps.metrics import iqa_metrics


def evaluate(predictions: pl.DataFrame, manifest: pl.DataFrame) -> dict[str, float]:
    test = manifest.filter((pl.col("split") == "test") & pl.col("mos").is_not_null()).select("image_id", "mos")
    joined = test.join(predictions.select("image_id", "prediction"), on="image_id", how="inner")
    joined = joined.filter(pl.col("prediction").is_not_null() & pl.col("prediction").is_finite())
    if joined.height < 3:
        raise InputError(f"only {joined.height} test images with MOS have predictions; cannot evaluate")
    metrics = iqa_metrics(joined["prediction"].to_numpy(), joined["mos"].to_numpy())
    metrics["n_missing"] = test.height - joined.height
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--ratio", type=float, required=True)
    ap.add_argument("--seed", type=int, default=None, help="omit for label-free (seed-independent) runs")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    preds = read_parquet(a.predictions, ["image_id", "prediction"])
    manifest = read_parquet(a.manifest, ["image_id", "split", "mos"])
    metrics = evaluate(preds, manifest)
    row = {"method": a.method, "ratio": a.ratio, "seed": a.seed, **metrics}
    table = pl.DataFrame([row], schema_overrides={"seed": pl.Int64})
    write_parquet(table, a.out, make_provenance("evaluate", predictions=str(a.predictions), **row))


if __name__ == "__main__":
    run_step(main)
