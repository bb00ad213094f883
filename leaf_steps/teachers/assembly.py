"""Assemble a teacher's answer shards into points.parquet or pairs.parquet (paper Eq 1-5).

Every answer is checked against the acceptance rules (``--acceptance``: ``min_token_mass``; an answer
whose label tokens held less probability becomes an error row naming what the teacher said instead),
then turned into the artifact's row: Eq 1-2 per image (:func:`leaf_steps.teachers.answers.point_row`),
Eq 3-5 per pair, the two orders averaged with ``--both-orders``
(:func:`leaf_steps.teachers.answers.pair_row`). Changing the threshold re-assembles; it never asks the
teacher again. Rows are sorted by image_id / pair_id, so the artifact's rows do not depend on the shard
count.

Provenance: the teacher (and its settings hash), the prompt, the acceptance rules, ``requests`` (the
shards' rows reused from the teacher score store, scored now, failed; requests sent) and ``summary``
(rows, failed rows, answers that were not a label, the answer-token mass distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_parquet
from leaf_steps.teachers.answers import BOTH_ORDERS_SCHEMA, PAIR_SCHEMA, POINT_SCHEMA, pair_row, point_row, scores_of
from leaf_steps.teachers.scoring import add_counts, answer_advice, assemble
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS, LabelScores, require_mass

KEYS = {"point": "image_id", "pair": "pair_id"}


def _accept(scores: LabelScores, labels: Sequence[str], min_token_mass: float | None) -> LabelScores:
    return scores if min_token_mass is None else require_mass(scores, labels, min_token_mass)


def point_rows(shard_rows: pl.DataFrame, min_token_mass: float | None) -> list[dict[str, Any]]:
    if shard_rows["image_id"].n_unique() != shard_rows.height:
        raise InputError("duplicate image_id values across the shards")
    return [
        point_row(row["image_id"], _accept(scores_of(row), LEVELS, min_token_mass))
        for row in shard_rows.iter_rows(named=True)
    ]


def pair_rows(shard_rows: pl.DataFrame, min_token_mass: float | None, both_orders: bool) -> list[dict[str, Any]]:
    by_order: dict[str, dict[int, dict[str, Any]]] = {"forward": {}, "reverse": {}}
    for row in shard_rows.iter_rows(named=True):
        seen = by_order.setdefault(row["order"], {})
        if row["pair_id"] in seen:
            raise InputError(f"pair {row['pair_id']} ({row['order']}) appears twice across the shards")
        seen[row["pair_id"]] = row
    if set(by_order) - {"forward", "reverse"}:
        raise InputError(f"unknown request order(s) {sorted(set(by_order) - {'forward', 'reverse'})}")
    if both_orders:
        lacking = sorted(set(by_order["forward"]) ^ set(by_order["reverse"]))
        if lacking:
            raise InputError(
                f"--both-orders: {len(lacking)} pair(s) lack one of the two orders, e.g. {lacking[:5]}; "
                "the shards were scored without both_orders"
            )
    rows = []
    for pair_id, forward in by_order["forward"].items():
        reverse = by_order["reverse"].get(pair_id) if both_orders else None
        rows.append(
            pair_row(
                forward,
                _accept(scores_of(forward), PAIR_LABELS, min_token_mass),
                _accept(scores_of(reverse), PAIR_LABELS, min_token_mass) if reverse else None,
            )
        )
    return rows


def assemble_scores(
    kind: str,
    shards: Sequence[Path],
    out: Path,
    acceptance: dict[str, Any],
    max_error_fraction: float = 0.05,
    both_orders: bool = False,
    teacher_name: str = "teacher",
) -> pl.DataFrame:
    if kind not in KEYS:
        raise ValueError(f"kind must be one of {sorted(KEYS)}")
    frames = [read_parquet(s, [KEYS[kind], "key", "logliks", "error"]) for s in shards]
    if not frames:
        raise InputError("no shard files given")
    table = pl.concat(frames, how="vertical_relaxed")
    provenances = [read_provenance(s) for s in shards]
    hashes = {p.get("settings_hash") for p in provenances}
    if len(hashes) > 1:
        raise InputError(
            f"{out}: the shards were answered with different teacher settings ({sorted(map(str, hashes))})"
        )
    min_mass = acceptance.get("min_token_mass")
    if kind == "point":
        rows, schema = point_rows(table, min_mass), POINT_SCHEMA
    else:
        rows, schema = pair_rows(table, min_mass, both_orders), (BOTH_ORDERS_SCHEMA if both_orders else PAIR_SCHEMA)
    result, summary = assemble(
        rows, schema, out, min_mass, max_error_fraction, answer_advice(kind, teacher_name), KEYS[kind]
    )
    # The teacher as described by a shard that set it up (facts such as the label tokens), else the first.
    described = next((p for p in provenances if p.get("teacher_set_up")), provenances[0])
    keep = {
        k: described[k]
        for k in ("teacher", "teacher_info", "prompt", "prompt_hash", "prompt_read", "settings_hash", "store")
        if k in described
    }
    requests = add_counts([p.get("requests", {}) for p in provenances])
    write_parquet(
        result,
        out,
        make_provenance(
            f"assemble_{kind}s",
            **keep,
            acceptance=acceptance,
            both_orders=both_orders if kind == "pair" else None,
            requests=requests,
            summary=summary,
            shards=[str(s) for s in shards],
        ),
    )
    return result
