"""Teacher pair-wise scoring of one shard of the sampled pairs (paper Eq 3-5).

The paper shows image a as A and b as B. With ``scoring.both_orders`` the teacher is also
asked with the order swapped and the two answers are averaged in probability space
(position debiasing); both answers are kept.

Output rows: pair_id, a_id, b_id, ll_a, ll_b (forward order), p_a (P(a better)), t_ab (Eq 4),
confidence (Eq 5), token_mass (the smaller of the orders'), missing_tokens, image_bytes_a,
image_bytes_b (how each image reached the model: original / png / jpeg / pixels), error; with
both orders also ll_a_rev, ll_b_rev (b shown as A), p_a_forward, p_a_reverse.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, stable_hash
from leaf_steps.teachers.scoring import answer_advice, run_batches, shard_rows
from leaf_steps.teachers.teacher_math import LabelScores, pair_confidence, pair_probability, preference_label
from leaf_steps.teachers.base import ImageRef, make_teacher


PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Int64, "a_id": pl.String, "b_id": pl.String, "ll_a": pl.Float64, "ll_b": pl.Float64,
    "p_a": pl.Float64, "t_ab": pl.Int8, "confidence": pl.Float64, "token_mass": pl.Float64,
    "missing_tokens": pl.List(pl.String), "image_bytes_a": pl.String, "image_bytes_b": pl.String, "error": pl.String,
}
BOTH_ORDERS_SCHEMA: dict[str, pl.DataType] = PAIR_SCHEMA | {
    "ll_a_rev": pl.Float64, "ll_b_rev": pl.Float64, "p_a_forward": pl.Float64, "p_a_reverse": pl.Float64}


def _finite(scores: LabelScores) -> bool:
    return scores.error is None and any(math.isfinite(x) for x in scores.logliks)


def pair_row(pair: dict[str, Any], forward: LabelScores, reverse: LabelScores | None) -> dict[str, Any]:
    row: dict[str, Any] = {"pair_id": pair["pair_id"], "a_id": pair["a_id"], "b_id": pair["b_id"],
                           "ll_a": float(forward.logliks[0]), "ll_b": float(forward.logliks[1])}
    errors = [s.error or "no finite log-likelihood" for s in (forward, reverse) if s is not None and not _finite(s)]
    p_forward = float(pair_probability(forward.logliks[0], forward.logliks[1])) if _finite(forward) else math.nan
    p_a = p_forward
    if reverse is not None:
        # In the swapped prompt b is "A": P(a better) is the probability of "B".
        p_reverse = float(pair_probability(reverse.logliks[1], reverse.logliks[0])) if _finite(reverse) else math.nan
        row |= {"ll_a_rev": float(reverse.logliks[0]), "ll_b_rev": float(reverse.logliks[1]),
                "p_a_forward": p_forward, "p_a_reverse": p_reverse}
        p_a = 0.5 * (p_forward + p_reverse)
    ok = not errors
    row["p_a"] = p_a if ok else None
    row["t_ab"] = int(preference_label(p_a)) if ok else None
    row["confidence"] = float(pair_confidence(p_a)) if ok else None
    masses = [s.mass for s in (forward, reverse) if s is not None and math.isfinite(s.mass)]
    # Kept on a row refused for its low mass: the shard summary shows the distribution.
    row["token_mass"] = float(min(masses)) if masses else None
    row["missing_tokens"] = sorted({m for s in (forward, reverse) if s is not None for m in s.missing})
    # Forward order: a is the first image. The swapped request sends the same bytes.
    shown = forward.image_bytes if len(forward.image_bytes) == 2 else [None, None]
    row["image_bytes_a"], row["image_bytes_b"] = shown
    row["error"] = "; ".join(errors) if errors else None
    return row


def score_pairs(pairs: Path, manifest: Path, teacher_spec: dict, prompts: dict, scoring: dict, shard: str,
                out: Path, resume_dir: Path, teacher_name: str = "teacher"):
    paths = dict(read_parquet(manifest, ["image_id", "path"]).select("image_id", "path").iter_rows())
    table = shard_rows(read_parquet(pairs, ["pair_id", "a_id", "b_id"]), shard, "pair_id")
    unknown = set(table["a_id"]).union(table["b_id"]) - paths.keys()
    if unknown:
        raise InputError(f"{pairs}: image ids not in {manifest}: {sorted(unknown)[:5]}")
    items = list(table.iter_rows(named=True))
    both = bool(scoring.get("both_orders", False))
    with make_teacher(teacher_spec | {"name": teacher_name}, prompts) as teacher:
        provenance = make_provenance(
            "score_pairs", teacher=teacher_name, teacher_info=teacher.describe(), prompt=prompts["pair"],
            prompt_hash=stable_hash(prompts["pair"]), scoring=scoring, shard=shard, pairs=str(pairs),
            resume_key=stable_hash([teacher_spec, prompts["pair"], scoring, shard]))

        def score_batch(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
            refs = [(ImageRef(p["a_id"], paths[p["a_id"]]), ImageRef(p["b_id"], paths[p["b_id"]])) for p in batch]
            forward = teacher.score_pairs(refs)
            reverse = teacher.score_pairs([(b, a) for a, b in refs]) if both else [None] * len(refs)
            return [pair_row(p, f, r) for p, f, r in zip(batch, forward, reverse, strict=True)]

        return run_batches(items, score_batch, lambda p: p["pair_id"], "pair_id", out, provenance, resume_dir,
                           scoring.get("batch_size", 16), scoring.get("max_error_fraction", 0.05),
                           desc=f"score_pairs[{teacher_name} {shard}]",
                           schema=BOTH_ORDERS_SCHEMA if both else PAIR_SCHEMA,
                           min_token_mass=teacher.acceptance().get("min_token_mass"),
                           answer_advice=answer_advice("pair", teacher_name),
                           item_images=lambda p: [paths[p["a_id"]], paths[p["b_id"]]])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--teacher-name", default="teacher")
    ap.add_argument("--teacher-spec", type=json_arg, required=True)
    ap.add_argument("--prompts", type=json_arg, required=True)
    ap.add_argument("--scoring", type=json_arg, required=True)
    ap.add_argument("--shard", default="1-of-1")
    ap.add_argument("--resume-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    score_pairs(a.pairs, a.manifest, a.teacher_spec, a.prompts, a.scoring, a.shard, a.out, a.resume_dir,
                a.teacher_name)


if __name__ == "__main__":
    run_step(main)
