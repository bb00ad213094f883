"""Teacher point-wise scoring of one manifest shard (paper Eq 1-2).

Output rows (one per image): image_id, ll_<level> (5 log-likelihoods), p_<level>
(Eq 1 softmax), teacher_score (Eq 2, on 5..1), token_mass (probability the answer
tokens had; also on the error rows of answers below the teacher's min_token_mass),
missing_tokens (levels absent from the returned top-K), image_bytes (how the image
reached the model: original / png / jpeg / pixels), error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.io import make_provenance, read_parquet, stable_hash
from leaf_steps.teachers.scoring import answer_advice, run_batches, shard_rows
from leaf_steps.teachers.teacher_math import LEVELS, LabelScores, expected_score, level_probabilities
from leaf_steps.teachers.base import ImageRef, make_teacher

LEVEL_COLUMNS = [level.lower() for level in LEVELS]
POINT_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.String,
    **{f"ll_{c}": pl.Float64 for c in LEVEL_COLUMNS},
    **{f"p_{c}": pl.Float64 for c in LEVEL_COLUMNS},
    "teacher_score": pl.Float64, "token_mass": pl.Float64, "missing_tokens": pl.List(pl.String),
    "image_bytes": pl.String, "error": pl.String,
}


def point_row(image_id: str, scores: LabelScores) -> dict[str, Any]:
    row: dict[str, Any] = {"image_id": image_id}
    ok = scores.error is None and any(math.isfinite(x) for x in scores.logliks)
    probs = level_probabilities(np.asarray(scores.logliks)) if ok else np.full(len(LEVELS), np.nan)
    for name, ll, p in zip(LEVEL_COLUMNS, scores.logliks, probs, strict=True):
        row[f"ll_{name}"] = float(ll)
        row[f"p_{name}"] = float(p)
    row["teacher_score"] = float(expected_score(probs)) if ok else None
    # A row refused for its low mass keeps the mass: the shard summary shows the distribution.
    row["token_mass"] = float(scores.mass) if math.isfinite(scores.mass) else None
    row["missing_tokens"] = list(scores.missing)
    row["image_bytes"] = scores.image_bytes[0] if scores.image_bytes else None
    row["error"] = scores.error if scores.error is not None else (None if ok else "no finite log-likelihood")
    return row


def score_points(manifest: Path, teacher_spec: dict, prompts: dict, scoring: dict, shard: str, out: Path,
                 resume_dir: Path, teacher_name: str = "teacher"):
    rows = shard_rows(read_parquet(manifest, ["image_id", "path"]), shard, "image_id")
    refs = [ImageRef(r["image_id"], r["path"]) for r in rows.iter_rows(named=True)]
    with make_teacher(teacher_spec | {"name": teacher_name}, prompts) as teacher:
        provenance = make_provenance(
            "score_points", teacher=teacher_name, teacher_info=teacher.describe(), prompt=prompts["point"],
            prompt_hash=stable_hash(prompts["point"]), scoring=scoring, shard=shard, manifest=str(manifest),
            resume_key=stable_hash([teacher_spec, prompts["point"], scoring, shard]))

        def score_batch(batch: Sequence[ImageRef]) -> list[dict[str, Any]]:
            return [point_row(ref.image_id, s) for ref, s in zip(batch, teacher.score_points(batch), strict=True)]

        return run_batches(refs, score_batch, lambda r: r.image_id, "image_id", out, provenance, resume_dir,
                           scoring.get("batch_size", 16), scoring.get("max_error_fraction", 0.05),
                           desc=f"score_points[{teacher_name} {shard}]", schema=POINT_SCHEMA,
                           min_token_mass=teacher.acceptance().get("min_token_mass"),
                           answer_advice=answer_advice("point", teacher_name),
                           item_images=lambda r: [r.path])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--teacher-name", default="teacher")
    ap.add_argument("--teacher-spec", type=json_arg, required=True, help="teachers.<name> block as JSON")
    ap.add_argument("--prompts", type=json_arg, required=True, help="prompts block as JSON")
    ap.add_argument("--scoring", type=json_arg, required=True, help="scoring block as JSON")
    ap.add_argument("--shard", default="1-of-1")
    ap.add_argument("--resume-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    score_points(a.manifest, a.teacher_spec, a.prompts, a.scoring, a.shard, a.out, a.resume_dir, a.teacher_name)


if __name__ == "__main__":
    run_step(main)
