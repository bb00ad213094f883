"""Evaluate every prediction file of a run on one common set of test images.

    python -m leaf_steps.evaluate --manifest dataset/manifest.parquet \\
        --run teacher_zero_shot 0 - predictions/teacher_zero_shot/labelfree.parquet \\
        --run leaf 0.1 3 predictions/leaf/ratio0.1/seed3.parquet ... \\
        --out-runs summary/runs.parquet --out-coverage summary/coverage.parquet

``--run METHOD RATIO SEED PREDICTIONS`` (SEED ``-`` for label-free runs) names each prediction file
(image_id, prediction). The metrics -- SRCC, KRCC, PLCC raw and after the VQEG 4-parameter
logistic, RMSE raw and after it -- are computed for every run on the same images: the test
images with a MOS that every run predicts (:mod:`leaf_steps.evaluation.common_set`).

Outputs: ``--out-runs``, one row per run (method, ratio, seed, n, n_test, n_missing, srcc, plcc,
plcc_logistic, krcc, rmse, rmse_logistic, stage1_epoch, stage1_selection; the stage-1 columns
come from the prediction file's provenance); ``--out-coverage``, one row per (run, test image it
lacks) with the reason (method, ratio, seed, image_id, reason).

Why one job for all runs: the common set depends on every prediction file, so per-run jobs
reading it would all rerun whenever any file changed. One job reruns exactly when the table
does, and the metrics of a few hundred runs take seconds.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_parquet
from leaf_steps.evaluation.common_set import Run, evaluate_runs, labelled_test_images

log = logging.getLogger("leaf.evaluate")


def read_run(method: str, ratio: str, seed: str, path: str) -> Run:
    try:
        ratio_value = float(ratio)
        seed_value = None if seed == "-" else int(seed)
    except ValueError as exc:
        raise InputError(
            f"--run {method} {ratio} {seed} {path}: ratio must be a number and seed an integer or '-'"
        ) from exc
    predictions = read_parquet(path, ["image_id", "prediction"])
    prov = read_provenance(path)
    return Run(
        method,
        ratio_value,
        seed_value,
        predictions,
        source=path,
        stage1_epoch=prov.get("stage1_epoch"),
        stage1_selection=prov.get("stage1_selection"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument(
        "--run", nargs=4, action="append", required=True, metavar=("METHOD", "RATIO", "SEED", "PREDICTIONS")
    )
    ap.add_argument("--out-runs", type=Path, required=True)
    ap.add_argument("--out-coverage", type=Path, required=True)
    a = ap.parse_args(argv)
    test = labelled_test_images(read_parquet(a.manifest, ["image_id", "split", "mos"]))
    runs = [read_run(*r) for r in a.run]
    table, lacking, common = evaluate_runs(test, runs)
    per_method = {m: n for m, n in lacking.group_by("method").len().iter_rows()}
    if lacking.height:
        log.warning(
            "evaluate: %d of %d test images with MOS lack a prediction from some run and are left out of "
            "every run's metrics (rows per method: %s); see %s",
            test.height - common.height,
            test.height,
            per_method,
            a.out_coverage,
        )
    provenance = make_provenance(
        "evaluate",
        manifest=str(a.manifest),
        n_test=test.height,
        n_common=common.height,
        lacking_rows_per_method=per_method,
        runs=[{**r.key(), "predictions": r.source} for r in runs],
    )
    write_parquet(lacking, a.out_coverage, provenance)
    write_parquet(table, a.out_runs, provenance)
    log.info("evaluate: %d runs on the same %d of %d test images with MOS", len(runs), common.height, test.height)


if __name__ == "__main__":
    run_step(main)
