"""Run the teacher scoring steps the way the workflow does (shards of answers, then assembly) in tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from leaf_steps.score_pairs import score_pairs
from leaf_steps.score_points import score_points
from leaf_steps.teachers.assembly import assemble_scores
from leaf_steps.teachers.base import make_teacher


def write_image_list(frame: pl.DataFrame, path: Path) -> Path:
    """The dataset stage's image list for ``frame`` (image_id, path): the sha256 of each file's bytes, or of its
    image_id for a path that does not exist (tests of the driver with an in-process teacher)."""

    def sha(image_id: str, file: str) -> str:
        p = Path(file)
        return hashlib.sha256(p.read_bytes() if p.is_file() else image_id.encode()).hexdigest()

    listed = frame.select("image_id", "path").with_columns(
        pl.struct("image_id", "path")
        .map_elements(lambda r: sha(r["image_id"], r["path"]), return_dtype=pl.String)
        .alias("sha256")
    )
    listed.write_parquet(path)
    return path


def acceptance(spec: dict, prompts: dict) -> dict:
    """The teacher's acceptance rules with its backend's defaults (the workflow passes them explicitly)."""
    return make_teacher(spec, prompts).acceptance()


def points_rows(
    images: Path,
    spec: dict,
    prompts: dict,
    scoring: dict,
    work: Path,
    store: Path | None = None,
    teacher_name: str = "teacher",
    shards: int = 1,
    out: Path | None = None,
    **kw,
) -> pl.DataFrame:
    """points.parquet's rows: every shard's answers (store: ``work/store`` unless given), then assembly."""
    store = store or work / "store"
    parts = []
    for k in range(1, shards + 1):
        part = work / "points" / f"{k}-of-{shards}.parquet"
        score_points(
            images,
            spec,
            prompts,
            f"{k}-of-{shards}",
            part,
            store,
            scoring.get("batch_size", 16),
            scoring.get("max_error_fraction", 0.05),
            teacher_name,
            **kw,
        )
        parts.append(part)
    return assemble_scores(
        "point",
        parts,
        out or work / "points.parquet",
        acceptance(spec, prompts),
        scoring.get("max_error_fraction", 0.05),
        teacher_name=teacher_name,
    )


def pairs_rows(
    pairs: Path,
    images: Path,
    spec: dict,
    prompts: dict,
    scoring: dict,
    work: Path,
    store: Path | None = None,
    teacher_name: str = "teacher",
    shards: int = 1,
    out: Path | None = None,
    **kw,
) -> pl.DataFrame:
    """pairs.parquet's rows (``scoring.both_orders`` honoured)."""
    store = store or work / "store"
    both = bool(scoring.get("both_orders", False))
    parts = []
    for k in range(1, shards + 1):
        part = work / "pairs" / f"{k}-of-{shards}.parquet"
        score_pairs(
            pairs,
            images,
            spec,
            prompts,
            f"{k}-of-{shards}",
            part,
            store,
            both,
            scoring.get("batch_size", 16),
            scoring.get("max_error_fraction", 0.05),
            teacher_name,
            **kw,
        )
        parts.append(part)
    return assemble_scores(
        "pair",
        parts,
        out or work / "pairs.parquet",
        acceptance(spec, prompts),
        scoring.get("max_error_fraction", 0.05),
        both_orders=both,
        teacher_name=teacher_name,
    )
