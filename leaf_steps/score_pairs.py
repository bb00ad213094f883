"""Teacher pair-wise answers for one shard of the sampled pairs (paper Sec. 3.2; Eq 3-5 come at assembly).

The paper shows image a as A and b as B: one request per pair, keyed by ``<sha256 of a>:<sha256 of b>``
(the order shown). With ``--both-orders`` the teacher is also asked with the order swapped, which is
another request ((b, a), keyed the other way round); the two answers are averaged at assembly. Answers
already in the teacher score store are reused (a pair sampled again, or a swapped pair asked before,
costs nothing); only the misses are sent, and the teacher is set up only when there is one.

Output rows (one per request): pair_id, a_id, b_id, order ("forward": a shown as A; "reverse"), then the
answer (:data:`leaf_steps.teachers.answers.ANSWER_SCHEMA`) and ``error`` for a request that failed.
``leaf_steps.gather_pairs`` turns them into pairs.parquet. The provenance records ``requests``: rows
reused from the store, rows scored now, rows failed, requests sent.

Settings on the command line: :mod:`leaf_steps.teachers.run_args` (tracked ``--teacher-spec``,
``--prompt`` and ``--both-orders``; untracked ``--run``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, stable_hash, write_parquet
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.run_args import add_arguments, read_image_list, run_settings
from leaf_steps.teachers.scoring import (
    FLUSH_ROWS,
    SHARD_SCHEMA_TAIL,
    Request,
    check_failed_requests,
    collect_answers,
    shard_rows,
)
from leaf_steps.teachers.store import TeacherStore, pair_key, request_settings, settings_hash

PAIR_SHARD_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Int64,
    "a_id": pl.String,
    "b_id": pl.String,
    "order": pl.String,
    **SHARD_SCHEMA_TAIL,
}
ORDERS = ("forward", "reverse")


def score_pairs(
    pairs: Path,
    images: Path,
    teacher_spec: dict[str, Any],
    prompts: dict[str, str],
    shard: str,
    out: Path,
    store: Path | str,
    both_orders: bool = False,
    batch_size: int = 16,
    max_error_fraction: float = 0.05,
    teacher_name: str = "teacher",
    flush_rows: int = FLUSH_ROWS,
) -> pl.DataFrame:
    listed = {
        image_id: (path, sha)
        for image_id, path, sha in read_image_list(images).select("image_id", "path", "sha256").iter_rows()
    }
    table = shard_rows(read_parquet(pairs, ["pair_id", "a_id", "b_id"]), shard, "pair_id")
    unknown = set(table["a_id"]).union(table["b_id"]) - listed.keys()
    if unknown:
        raise InputError(f"{pairs}: image ids not in {images}: {sorted(unknown)[:5]}")
    teacher_store = TeacherStore(store)
    teacher = make_teacher(teacher_spec | {"name": teacher_name}, prompts)
    try:
        settings = request_settings(teacher.score_settings(), "pair", teacher.prompt_for("pair"))
        shash = settings_hash(settings)
        teacher_store.register(shash, settings)
        items: list[tuple[int, str, str, str, Request]] = []
        for pair_id, a_id, b_id in table.select("pair_id", "a_id", "b_id").iter_rows():
            (path_a, sha_a), (path_b, sha_b) = listed[a_id], listed[b_id]
            ref_a, ref_b = ImageRef(a_id, path_a), ImageRef(b_id, path_b)
            items.append((pair_id, a_id, b_id, "forward", Request(pair_key(sha_a, sha_b), (ref_a, ref_b))))
            if both_orders:
                items.append((pair_id, a_id, b_id, "reverse", Request(pair_key(sha_b, sha_a), (ref_b, ref_a))))
        job = make_provenance("score_pairs", teacher=teacher_name, shard=shard, pairs=str(pairs))
        answers = collect_answers(
            teacher,
            "pair",
            [it[-1] for it in items],
            teacher_store,
            shash,
            batch_size,
            job,
            desc=f"score_pairs[{teacher_name} {shard}]",
            flush_rows=flush_rows,
        )
        rows = [
            {"pair_id": pid, "a_id": a, "b_id": b, "order": order, **answers.records[req.key]}
            for pid, a, b, order, req in items
        ]
        df = pl.DataFrame(rows, schema=PAIR_SHARD_SCHEMA)
        # Each request's images: those an error names are checked for being unusable (they would fail again).
        request_id = pl.concat_str([pl.col("pair_id").cast(pl.String), pl.col("order")], separator="/")
        shown = {f"{pid}/{order}": [ref.path for ref in req.images] for pid, _, _, order, req in items}
        check_failed_requests(
            df.with_columns(request=request_id), "request", shown, out, teacher_store, max_error_fraction
        )
        counts = answers.counts([req.key for *_, req in items])
        write_parquet(
            df,
            out,
            make_provenance(
                "score_pairs",
                teacher=teacher_name,
                teacher_info=teacher.describe(),
                prompt=prompts.get("pair"),
                prompt_hash=stable_hash(prompts.get("pair")),
                prompt_read=teacher.reads_prompts,
                settings_hash=shash,
                store=str(teacher_store.root),
                shard=shard,
                pairs=str(pairs),
                both_orders=both_orders,
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
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="the image list (image_id, path, sha256)")
    ap.add_argument("--both-orders", action="store_true", help="also ask with the order swapped")
    add_arguments(ap)
    a = ap.parse_args(argv)
    run = run_settings(a, "pair")
    score_pairs(
        a.pairs,
        a.images,
        run["teacher"],
        run["prompts"],
        a.shard,
        a.out,
        run["store"],
        a.both_orders,
        run.get("batch_size", 16),
        run.get("max_error_fraction", 0.05),
        a.teacher_name,
    )


if __name__ == "__main__":
    run_step(main)
