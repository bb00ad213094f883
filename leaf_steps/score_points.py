"""Teacher point-wise answers for one shard of the image list (paper Sec. 3.2; Eq 1-2 come at assembly).

One request per image, keyed by the sha256 of the image file's bytes (the ``sha256`` column of the
dataset stage's image list, ``dataset/images.parquet``). Answers already in the teacher score store
(:mod:`leaf_steps.teachers.store`) are reused; only the misses are sent to the teacher, which is set up
(model loaded, server launched) only when there is one, and the new answers are added to the store as
they come (:func:`leaf_steps.teachers.scoring.collect_answers`).

Output rows (one per image of the shard): image_id, then the answer (key, logliks, token_mass, missing,
top_tokens, top_logprobs, image_bytes, answer_error; :data:`leaf_steps.teachers.answers.ANSWER_SCHEMA`)
and ``error`` for a request that failed. ``leaf_steps.gather_points`` turns them into points.parquet.
The provenance records ``requests``: rows reused from the store, rows scored now, rows failed, requests
sent.

Settings on the command line: :mod:`leaf_steps.teachers.run_args` (tracked ``--teacher-spec`` and
``--prompt``; untracked ``--run``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import make_provenance, stable_hash, write_parquet
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.run_args import IMAGE_LIST_COLUMNS, add_arguments, read_image_list, run_settings
from leaf_steps.teachers.scoring import (
    FLUSH_ROWS,
    SHARD_SCHEMA_TAIL,
    Request,
    check_failed_requests,
    collect_answers,
    shard_rows,
)
from leaf_steps.teachers.store import TeacherStore, request_settings, settings_hash

POINT_SHARD_SCHEMA: dict[str, pl.DataType] = {"image_id": pl.String, **SHARD_SCHEMA_TAIL}


def score_points(
    images: Path,
    teacher_spec: dict[str, Any],
    prompts: dict[str, str],
    shard: str,
    out: Path,
    store: Path | str,
    batch_size: int = 16,
    max_error_fraction: float = 0.05,
    teacher_name: str = "teacher",
    flush_rows: int = FLUSH_ROWS,
) -> pl.DataFrame:
    table = shard_rows(read_image_list(images), shard, "image_id")
    teacher_store = TeacherStore(store)
    teacher = make_teacher(teacher_spec | {"name": teacher_name}, prompts)
    try:
        settings = request_settings(teacher.score_settings(), "point", teacher.prompt_for("point"))
        shash = settings_hash(settings)
        teacher_store.register(shash, settings)
        items = list(table.select(IMAGE_LIST_COLUMNS).iter_rows())
        requests = [Request(sha, (ImageRef(image_id, path),)) for image_id, path, sha in items]
        job = make_provenance("score_points", teacher=teacher_name, shard=shard, images=str(images))
        answers = collect_answers(
            teacher,
            "point",
            requests,
            teacher_store,
            shash,
            batch_size,
            job,
            desc=f"score_points[{teacher_name} {shard}]",
            flush_rows=flush_rows,
        )
        rows = [{"image_id": image_id, **answers.records[sha]} for image_id, _, sha in items]
        df = pl.DataFrame(rows, schema=POINT_SHARD_SCHEMA)
        check_failed_requests(
            df, "image_id", {image_id: [path] for image_id, path, _ in items}, out, teacher_store, max_error_fraction
        )
        counts = answers.counts([sha for _, _, sha in items])
        write_parquet(
            df,
            out,
            make_provenance(
                "score_points",
                teacher=teacher_name,
                teacher_info=teacher.describe(),
                prompt=prompts.get("point"),
                prompt_hash=stable_hash(prompts.get("point")),
                prompt_read=teacher.reads_prompts,
                settings_hash=shash,
                store=str(teacher_store.root),
                shard=shard,
                images=str(images),
                requests=counts,
                teacher_set_up=answers.teacher_set_up,
                run={"batch_size": batch_size, "max_error_fraction": max_error_fraction},
            ),
        )
        return df
    finally:
        teacher.close()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="the image list (image_id, path, sha256)")
    add_arguments(ap)
    a = ap.parse_args(argv)
    run = run_settings(a, "point")
    score_points(
        a.images,
        run["teacher"],
        run["prompts"],
        a.shard,
        a.out,
        run["store"],
        run.get("batch_size", 16),
        run.get("max_error_fraction", 0.05),
        a.teacher_name,
    )


if __name__ == "__main__":
    run_step(main)
