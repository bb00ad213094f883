"""What the scoring steps share on their command line: the image list, and tracked vs run settings.

The scoring rules pass what changes an answer as tracked params (``--teacher-spec``: the score part of
the teacher block, :func:`leaf_steps.teachers.base.split_spec`; ``--prompt``: the kind's prompt, null
for a teacher that reads none) and how the job runs as ``--run``, an argument Snakemake does not track
(the whole teacher block, both prompts, batch size, error threshold, store folder): changing a run
setting reruns no job. The step runs with ``--run`` and checks that the tracked params are its score
part, so the two can never disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.cli import json_arg
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import read_parquet
from leaf_steps.teachers.base import split_spec

IMAGE_LIST_COLUMNS = ("image_id", "path", "sha256")


def read_image_list(path: Path) -> pl.DataFrame:
    """The dataset stage's image list (image_id, path, sha256); every image must have its content hash."""
    table = read_parquet(path, IMAGE_LIST_COLUMNS)
    bad = table.filter(pl.col("sha256").is_null() | (pl.col("sha256").str.len_chars() != 64))
    if bad.height:
        raise InputError(
            f"{path}: {bad.height} image(s) without a sha256 content hash, e.g. "
            f"{bad['image_id'].head(3).to_list()}; rerun the dataset stage"
        )
    if table["image_id"].n_unique() != table.height:
        raise InputError(f"{path}: duplicate image_id values")
    return table


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--teacher-name", default="teacher")
    ap.add_argument(
        "--teacher-spec",
        type=json_arg,
        default=None,
        help="the score part of teachers.<name> as JSON (the rule's tracked param; checked against --run)",
    )
    ap.add_argument("--prompt", type=json_arg, default=None, help="the kind's prompt as JSON (tracked; null: not read)")
    ap.add_argument(
        "--run",
        type=json_arg,
        required=True,
        help='{"teacher": teachers.<name>, "prompts": {...}, "batch_size": N, "max_error_fraction": F, '
        '"store": DIR} as JSON (not tracked: none of it changes an answer)',
    )
    ap.add_argument("--shard", default="1-of-1")
    ap.add_argument("--out", type=Path, required=True)


def run_settings(a: argparse.Namespace, kind: str) -> dict[str, Any]:
    """``--run``, checked against the tracked ``--teacher-spec`` and ``--prompt``."""
    run = a.run
    for key in ("teacher", "prompts", "store"):
        if key not in run:
            raise ConfigError(f"--run: missing {key!r}")
    score = split_spec(run["teacher"])["score"]
    if a.teacher_spec is not None and score != a.teacher_spec:
        raise ConfigError(
            f"--teacher-spec {a.teacher_spec} is not the score part of the teacher block the job runs "
            f"with ({score}); the rule must pass both from one teachers.<name>"
        )
    if a.prompt is not None and a.prompt != run["prompts"].get(kind):
        raise ConfigError(
            f"--prompt differs from prompts.{kind} the job runs with; the rule must pass both from one config"
        )
    return run
