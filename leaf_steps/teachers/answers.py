"""A teacher's answer to one request, as it is stored and as it becomes a row of points/pairs.

What a backend returns for one request (:class:`~leaf_steps.teachers.teacher_math.LabelScores` before the
acceptance check) is kept whole: the label log-likelihoods, the probability the label tokens held
(``token_mass``), the labels imputed because they were not among the returned tokens, the most likely
tokens, how each image reached the model, and, for an answer that named no label at all, the reason.
Everything the paper computes from it (Eq 1-5) and the ``min_token_mass`` check are applied when the
rows are assembled (:func:`point_row`, :func:`pair_row`), so that a threshold change never asks the
teacher again.

A request that failed (no answer: a timeout, an HTTP error, an unreadable image) is not an answer: it
is never stored and its row carries the failure in ``error``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from leaf_steps.teachers.teacher_math import (
    LEVELS,
    NOT_ANSWERED,
    LabelScores,
    expected_score,
    level_probabilities,
    pair_confidence,
    pair_probability,
    preference_label,
)

# One stored answer (a row of a store part, and the answer columns of a scoring shard).
ANSWER_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String,
    "logliks": pl.List(pl.Float64),
    "token_mass": pl.Float64,
    "missing": pl.List(pl.String),
    "top_tokens": pl.List(pl.String),
    "top_logprobs": pl.List(pl.Float64),
    "image_bytes": pl.List(pl.String),
    "answer_error": pl.String,  # set only when the answer named no label (NOT_ANSWERED ...)
}
ANSWER_COLUMNS = tuple(ANSWER_SCHEMA)


def is_answer(scores: LabelScores) -> bool:
    """True for what the teacher answered (stored), False for a request that failed (retried next time).

    An answer that named no label is an answer: the same request gives it again, so asking again
    costs without helping; it stays an error row unless the acceptance settings change.
    """
    return scores.error is None or scores.error.startswith(NOT_ANSWERED)


def answer_record(key: str, scores: LabelScores) -> dict[str, Any]:
    """The stored form of an answer (see :func:`is_answer`)."""
    return {
        "key": key,
        "logliks": [float(x) for x in scores.logliks],
        "token_mass": float(scores.mass) if scores.mass is not None else math.nan,
        "missing": list(scores.missing),
        "top_tokens": [str(t) for t, _ in scores.top],
        "top_logprobs": [float(lp) for _, lp in scores.top],
        "image_bytes": list(scores.image_bytes),
        "answer_error": scores.error,
    }


def failed_record(key: str, scores: LabelScores, n_labels: int) -> dict[str, Any]:
    """The row of a request that failed: no answer columns, the failure in ``error``."""
    return {
        "key": key,
        "logliks": [math.nan] * n_labels,
        "token_mass": None,
        "missing": [],
        "top_tokens": [],
        "top_logprobs": [],
        "image_bytes": [],
        "answer_error": None,
        "error": scores.error,
    }


def scores_of(row: dict[str, Any]) -> LabelScores:
    """The answer (or failure) a shard row holds, as the backend returned it."""
    error = row.get("error") or row.get("answer_error")
    mass = row.get("token_mass")
    return LabelScores(
        logliks=[math.nan if x is None else float(x) for x in row["logliks"]],
        mass=math.nan if mass is None else float(mass),
        missing=list(row.get("missing") or []),
        error=error,
        top=list(zip(row.get("top_tokens") or [], row.get("top_logprobs") or [])),
        image_bytes=list(row.get("image_bytes") or []),
    )


# ----------------------------------------------------------------------------- rows of the artifacts

LEVEL_COLUMNS = [level.lower() for level in LEVELS]
POINT_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.String,
    **{f"ll_{c}": pl.Float64 for c in LEVEL_COLUMNS},
    **{f"p_{c}": pl.Float64 for c in LEVEL_COLUMNS},
    "teacher_score": pl.Float64,
    "token_mass": pl.Float64,
    "missing_tokens": pl.List(pl.String),
    "image_bytes": pl.String,
    "error": pl.String,
}
PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Int64,
    "a_id": pl.String,
    "b_id": pl.String,
    "ll_a": pl.Float64,
    "ll_b": pl.Float64,
    "p_a": pl.Float64,
    "t_ab": pl.Int8,
    "confidence": pl.Float64,
    "token_mass": pl.Float64,
    "missing_tokens": pl.List(pl.String),
    "image_bytes_a": pl.String,
    "image_bytes_b": pl.String,
    "error": pl.String,
}
BOTH_ORDERS_SCHEMA: dict[str, pl.DataType] = PAIR_SCHEMA | {
    "ll_a_rev": pl.Float64,
    "ll_b_rev": pl.Float64,
    "p_a_forward": pl.Float64,
    "p_a_reverse": pl.Float64,
}


def _finite(scores: LabelScores) -> bool:
    return scores.error is None and any(math.isfinite(x) for x in scores.logliks)


def point_row(image_id: str, scores: LabelScores) -> dict[str, Any]:
    """One row of points.parquet (Eq 1-2) from an accepted answer or an error."""
    row: dict[str, Any] = {"image_id": image_id}
    ok = _finite(scores)
    probs = level_probabilities(np.asarray(scores.logliks)) if ok else np.full(len(LEVELS), np.nan)
    for name, ll, p in zip(LEVEL_COLUMNS, scores.logliks, probs, strict=True):
        row[f"ll_{name}"] = float(ll)
        row[f"p_{name}"] = float(p)
    row["teacher_score"] = float(expected_score(probs)) if ok else None
    # A row refused for its low mass keeps the mass: the summary shows the distribution.
    row["token_mass"] = float(scores.mass) if math.isfinite(scores.mass) else None
    row["missing_tokens"] = list(scores.missing)
    row["image_bytes"] = scores.image_bytes[0] if scores.image_bytes else None
    row["error"] = scores.error if scores.error is not None else (None if ok else "no finite log-likelihood")
    return row


def pair_row(pair: dict[str, Any], forward: LabelScores, reverse: LabelScores | None) -> dict[str, Any]:
    """One row of pairs.parquet (Eq 3-5); with ``reverse`` (b shown as A) the two orders are averaged in
    probability space."""
    row: dict[str, Any] = {
        "pair_id": pair["pair_id"],
        "a_id": pair["a_id"],
        "b_id": pair["b_id"],
        "ll_a": float(forward.logliks[0]),
        "ll_b": float(forward.logliks[1]),
    }
    errors = [s.error or "no finite log-likelihood" for s in (forward, reverse) if s is not None and not _finite(s)]
    p_forward = float(pair_probability(forward.logliks[0], forward.logliks[1])) if _finite(forward) else math.nan
    p_a = p_forward
    if reverse is not None:
        # In the swapped prompt b is "A": P(a better) is the probability of "B".
        p_reverse = float(pair_probability(reverse.logliks[1], reverse.logliks[0])) if _finite(reverse) else math.nan
        row |= {
            "ll_a_rev": float(reverse.logliks[0]),
            "ll_b_rev": float(reverse.logliks[1]),
            "p_a_forward": p_forward,
            "p_a_reverse": p_reverse,
        }
        p_a = 0.5 * (p_forward + p_reverse)
    ok = not errors
    row["p_a"] = p_a if ok else None
    row["t_ab"] = int(preference_label(p_a)) if ok else None
    row["confidence"] = float(pair_confidence(p_a)) if ok else None
    masses = [s.mass for s in (forward, reverse) if s is not None and math.isfinite(s.mass)]
    # Kept on a row refused for its low mass: the summary shows the distribution.
    row["token_mass"] = float(min(masses)) if masses else None
    row["missing_tokens"] = sorted({m for s in (forward, reverse) if s is not None for m in s.missing})
    # Forward order: a is the first image. The swapped request sends the same bytes.
    shown = forward.image_bytes if len(forward.image_bytes) == 2 else [None, None]
    row["image_bytes_a"], row["image_bytes_b"] = shown
    row["error"] = "; ".join(errors) if errors else None
    return row
