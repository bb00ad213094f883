"""Every run evaluated on the same test images.

A method can lack predictions for some test images: the teacher's failed rows (its baselines skip
them), or files a method could not read. Metrics computed on each run's own images would then
compare methods on different images without saying so. Here the evaluated set is the common
one: the test images with a MOS that *every* run predicts (a finite prediction). What each run
lacked is listed image by image (:func:`coverage`), so that the table can say how many images each
cell used and which methods cost the others which images.

All functions take and return polars DataFrames (no files), so they can be tested on small frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.evaluation.metrics import iqa_metrics

MIN_IMAGES = 3
COVERAGE_SCHEMA = {
    "method": pl.String,
    "ratio": pl.Float64,
    "seed": pl.Int64,
    "image_id": pl.String,
    "reason": pl.String,
}
NO_PREDICTION = "no prediction"
NOT_FINITE = "prediction is null, NaN or infinite"


@dataclass(frozen=True)
class Run:
    """One prediction file: a method at one MOS ratio (0 = label-free) and subset seed (None: label-free)."""

    method: str
    ratio: float
    seed: int | None
    predictions: pl.DataFrame  # image_id, prediction
    source: str = "predictions"  # for error messages
    stage1_epoch: int | None = None
    stage1_selection: str | None = None

    def key(self) -> dict:
        return {"method": self.method, "ratio": float(self.ratio), "seed": self.seed}


def labelled_test_images(manifest: pl.DataFrame) -> pl.DataFrame:
    """The test split's images with a MOS (image_id, mos), sorted by image_id."""
    return (
        manifest.filter((pl.col("split") == "test") & pl.col("mos").is_not_null())
        .select("image_id", pl.col("mos").cast(pl.Float64))
        .sort("image_id")
    )


def check_predictions(run: Run) -> None:
    dup = run.predictions.filter(pl.col("image_id").is_duplicated())
    if dup.height:
        raise InputError(f"{run.source}: image_id {dup['image_id'][0]!r} has more than one prediction")


def coverage(test: pl.DataFrame, runs: Sequence[Run]) -> pl.DataFrame:
    """One row per (run, test image with MOS) the run has no finite prediction for, with the reason."""
    frames = []
    for run in runs:
        check_predictions(run)
        joined = test.select("image_id").join(
            run.predictions.select("image_id", "prediction"), on="image_id", how="left", coalesce=True
        )
        present = run.predictions["image_id"].implode()
        lacking = joined.filter(pl.col("prediction").is_null() | ~pl.col("prediction").is_finite()).select(
            "image_id",
            reason=pl.when(pl.col("image_id").is_in(present)).then(pl.lit(NOT_FINITE)).otherwise(pl.lit(NO_PREDICTION)),
        )
        frames.append(lacking.with_columns(**{k: pl.lit(v) for k, v in run.key().items()}))
    if not frames:
        return pl.DataFrame(schema=COVERAGE_SCHEMA)
    return pl.concat([f.select(list(COVERAGE_SCHEMA)).cast(COVERAGE_SCHEMA) for f in frames]).sort(
        "method", "ratio", "seed", "image_id", nulls_last=False
    )


def common_images(test: pl.DataFrame, lacking: pl.DataFrame) -> pl.DataFrame:
    """The test images with MOS that no run lacks."""
    return test.filter(~pl.col("image_id").is_in(lacking["image_id"].unique().implode()))


def _run_name(key: dict) -> str:
    if key["seed"] is None:
        return f"{key['method']} label-free" if key["ratio"] == 0 else f"{key['method']} ratio {key['ratio']:g}"
    return f"{key['method']} ratio {key['ratio']:g} seed {key['seed']}"


def evaluate_runs(test: pl.DataFrame, runs: Sequence[Run]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(per-run metrics on the common images, coverage, common images).

    Per-run rows: method, ratio, seed, n (images used: the common set), n_test (test images with
    MOS), n_missing (of those, the ones this run lacks), the metrics of :func:`iqa_metrics`, and the
    stage-1 epoch and rule of the run's student where it has one.
    """
    if not runs:
        raise InputError("no prediction files to evaluate")
    lacking = coverage(test, runs)
    common = common_images(test, lacking)
    if common.height < MIN_IMAGES:
        worst = (
            lacking.group_by("method", "ratio", "seed").len().sort("len", descending=True).head(5).iter_rows(named=True)
        )
        raise InputError(
            f"only {common.height} of {test.height} test images with MOS have a prediction from every "
            f"run (need >= {MIN_IMAGES}); runs lacking the most: "
            + "; ".join(f"{_run_name(r)}: {r['len']}" for r in worst)
        )
    ids = common["image_id"].implode()
    missing = {
        (r["method"], r["ratio"], r["seed"]): r["len"]
        for r in lacking.group_by("method", "ratio", "seed").len().iter_rows(named=True)
    }
    rows = []
    for run in runs:
        on = common.join(
            run.predictions.filter(pl.col("image_id").is_in(ids)).select("image_id", "prediction"),
            on="image_id",
            how="inner",
        ).sort("image_id")
        assert on.height == common.height, (run.source, on.height, common.height)  # coverage() guarantees it
        metrics = iqa_metrics(on["prediction"].to_numpy(), on["mos"].to_numpy())
        key = run.key()
        rows.append(
            {
                **key,
                **metrics,
                "n_test": test.height,
                "n_missing": missing.get((key["method"], key["ratio"], key["seed"]), 0),
                "stage1_epoch": run.stage1_epoch,
                "stage1_selection": run.stage1_selection,
            }
        )
    table = pl.DataFrame(
        rows,
        schema_overrides={
            "seed": pl.Int64,
            "stage1_epoch": pl.Int64,
            "stage1_selection": pl.String,
            "ratio": pl.Float64,
        },
    )
    first = ["method", "ratio", "seed", "n", "n_test", "n_missing"]
    table = table.select(first + [c for c in table.columns if c not in first]).sort(
        "method", "ratio", "seed", nulls_last=False
    )
    return table, lacking, common
