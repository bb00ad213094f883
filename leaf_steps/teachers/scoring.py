"""The request driver shared by teacher point and pair scoring, and the assembly of their rows.

A scoring shard is a list of requests, each with a content key (:mod:`leaf_steps.teachers.store`).
:func:`collect_answers` takes every answer the score store already holds, sends only the misses to
the teacher (in batches of ``batch_size``; the teacher is only set up when there is a miss) and adds
the new answers to the store as it goes (a new part file at least every :data:`FLUSH_ROWS` answers or
:data:`FLUSH_SECONDS`, and when the job ends or is interrupted), so a killed job keeps what it paid
for and its rerun asks only for the rest. A request that failed (timeout, HTTP error, unreadable
image) is a row with ``error`` set and is never stored; the shard is written only if such rows are
within ``max_error_fraction`` (otherwise a TeacherError names them, and images that will fail again).

:func:`assemble` turns the shards' answers into the artifact's rows (Eq 1-5 with the acceptance check,
``min_token_mass``, applied then): a threshold change re-assembles, it never asks the teacher again.
When most rows fail because the teacher answered something else than a label, the message says what
to change (prompt, thinking mode, model), since asking again cannot help.

Provenance: each shard records ``requests`` (rows reused from the store, rows scored now, rows failed,
requests sent); the assembled artifact adds them up, with the distribution of ``token_mass``
(quantiles, a 10-bin histogram on [0, 1], the rows below ``min_token_mass``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leaf_steps.core.errors import TeacherError
from leaf_steps.core.progress import progress
from leaf_steps.teachers.answers import ANSWER_SCHEMA, answer_record, failed_record, is_answer
from leaf_steps.teachers.base import ImageRef, Teacher
from leaf_steps.teachers.store import TeacherStore
from leaf_steps.teachers.teacher_math import LEVELS, NOT_ANSWERED, PAIR_LABELS

log = logging.getLogger("leaf.scoring")

# New answers reach the store at least this often (rows, seconds): what a killed job can lose.
FLUSH_ROWS = 1024
FLUSH_SECONDS = 60.0
SHARD_SCHEMA_TAIL: dict[str, pl.DataType] = {**ANSWER_SCHEMA, "error": pl.String}


def parse_shard(text: str) -> tuple[int, int]:
    """Snakemake scatter items look like ``3-of-8`` (1-based)."""
    try:
        k, n = text.split("-of-")
        k, n = int(k), int(n)
    except ValueError:
        raise ValueError(f"shard must look like 'K-of-N', got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"shard {text!r}: K must be in 1..N")
    return k, n


def shard_rows(df: pl.DataFrame, shard: str, key: str) -> pl.DataFrame:
    """Deterministic round-robin shard of ``df`` ordered by ``key``."""
    k, n = parse_shard(shard)
    df = df.sort(key).with_row_index("_row")
    return df.filter(pl.col("_row") % n == k - 1).drop("_row")


@dataclass(frozen=True)
class Request:
    """One question to the teacher: its content key and the image(s) shown (A first for a pair)."""

    key: str
    images: tuple[ImageRef, ...]


@dataclass
class Answers:
    """What :func:`collect_answers` found: ``records`` by key (answers, and failures with ``error``)."""

    records: dict[str, dict[str, Any]]
    reused_keys: set[str]
    requests_sent: int
    parts_written: list[str] = field(default_factory=list)
    parts_read: int = 0
    teacher_set_up: bool = False

    def counts(self, keys: Sequence[str]) -> dict[str, int]:
        """Rows of a shard (one key each) reused from the store, scored now, failed; requests sent."""
        failed = sum(1 for k in keys if self.records[k].get("error") is not None)
        reused = sum(1 for k in keys if k in self.reused_keys)
        return {
            "rows": len(keys),
            "reused": reused,
            "scored": len(keys) - reused - failed,
            "failed": failed,
            "requests_sent": self.requests_sent,
            "parts_read": self.parts_read,
            "parts_written": len(self.parts_written),
        }


def collect_answers(
    teacher: Teacher,
    kind: str,
    requests: Sequence[Request],
    store: TeacherStore,
    shash: str,
    batch_size: int,
    provenance: dict[str, Any],
    desc: str,
    flush_rows: int = FLUSH_ROWS,
    flush_seconds: float = FLUSH_SECONDS,
) -> Answers:
    """Answers to ``requests`` from the store, and from the teacher for the misses (added to the store)."""
    unique: dict[str, Request] = {}
    for request in requests:
        unique.setdefault(request.key, request)
    found = store.lookup(shash, kind, unique)
    records: dict[str, dict[str, Any]] = {
        row["key"]: row | {"error": None} for row in found.answers.iter_rows(named=True)
    }
    reused = set(records)
    misses = [request for key, request in unique.items() if key not in records]
    result = Answers(records, reused, 0, parts_read=found.parts_read)
    log.info(
        "%s: %d request(s), %d distinct; %d answered from the store (%s), %d to ask the teacher",
        desc,
        len(requests),
        len(unique),
        len(reused),
        store.root,
        len(misses),
    )
    if not misses:
        return result
    labels = LEVELS if kind == "point" else PAIR_LABELS
    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if pending:
            part = store.add(
                shash,
                kind,
                pl.DataFrame(pending, schema=ANSWER_SCHEMA),
                provenance | {"teacher_info": teacher.describe()},
            )
            result.parts_written.append(str(part))
            pending.clear()
        last_flush = time.monotonic()

    batches = [misses[i : i + batch_size] for i in range(0, len(misses), batch_size)]
    try:
        for batch in progress(batches, total=len(batches), desc=desc):
            if kind == "point":
                scores = teacher.answer_points([r.images[0] for r in batch])
            else:
                scores = teacher.answer_pairs([(r.images[0], r.images[1]) for r in batch])
            result.teacher_set_up = True
            result.requests_sent += len(batch)
            for request, answer in zip(batch, scores, strict=True):
                if is_answer(answer):
                    record = answer_record(request.key, answer)
                    pending.append(record)
                    records[request.key] = record | {"error": None}
                else:
                    records[request.key] = failed_record(request.key, answer, len(labels))
            if len(pending) >= flush_rows or time.monotonic() - last_flush >= flush_seconds:
                flush()
    finally:
        flush()  # also when interrupted: what was paid for is kept
    return result


# ----------------------------------------------------------------------------- failures


def _retryable(error: pl.Expr) -> pl.Expr:
    """Failed rows worth asking again: not those the teacher answered with something else."""
    return error.is_not_null() & ~error.str.starts_with(NOT_ANSWERED)


def unusable_images(
    failed: pl.DataFrame, by_key: dict[Any, Sequence[str]], row_key: str
) -> tuple[dict[str, str], set[Any]]:
    """Images of failed rows that cannot be used at all, so their rows would fail again: (path -> problem,
    keys of the rows they sank). Only images the error text names are decoded again (cheap: a server
    outage names no image)."""
    from leaf_steps.images import DEFAULT_MAX_PIXELS
    from leaf_steps.images.verdict import decode_one

    problems: dict[str, str | None] = {}
    sunk = set()
    for key, error in failed.select(row_key, "error").iter_rows():
        for path in by_key.get(key, ()):
            if path not in str(error):
                continue
            if path not in problems:
                problems[path] = decode_one(path, DEFAULT_MAX_PIXELS)[2]
            if problems[path] is not None:
                sunk.add(key)
    return {p: why for p, why in problems.items() if why is not None}, sunk


def check_failed_requests(
    rows: pl.DataFrame,
    row_key: str,
    images_of: dict[Any, Sequence[str]],
    out: Path,
    store: TeacherStore,
    max_error_fraction: float,
) -> None:
    """TeacherError when more than ``max_error_fraction`` of a shard's rows are failed requests: which ones,
    which of them will fail again (unusable images, named), and that the answers received are kept."""
    failed = rows.filter(pl.col("error").is_not_null())
    if not rows.height or failed.height / rows.height <= max_error_fraction:
        if failed.height:
            log.warning(
                "%s: %d of %d rows are failed requests, kept as error rows (asked again next time)",
                out,
                failed.height,
                rows.height,
            )
        return
    head = f"{out}: {failed.height} of {rows.height} rows failed (> scoring.max_error_fraction={max_error_fraction})."
    bad, sunk = unusable_images(failed, images_of, row_key)
    others = failed.filter(~pl.col(row_key).is_in(list(sunk)))
    parts = [head]
    if bad:
        listing = "\n".join(f"    {why}" for why in bad.values())
        parts.append(
            f"  {len(sunk)} row(s) failed because {len(bad)} image(s) cannot be used, and will fail again on "
            f"a rerun:\n{listing}\n  Fix or remove these files and rerun the dataset stage (with "
            "dataset.on_bad_image: drop it leaves unusable images out and lists them), or raise "
            "scoring.max_error_fraction."
        )
    if others.height:
        first = others["error"].head(3).to_list()
        parts.append(
            f"  {others.height} row(s) failed otherwise; first errors: {first}. The answers received are "
            f"kept in the teacher score store ({store.root}); rerun to ask only for the failed requests."
        )
    else:
        parts.append(f"  The answers received are kept in the teacher score store ({store.root}).")
    raise TeacherError("\n".join(parts))


# ----------------------------------------------------------------------------- assembly

MASS_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)


def answer_advice(kind: str, teacher: str) -> str:
    """What to change when the teacher does not answer with a label (the kind's prompt, the thinking
    mode, the model or the threshold): asking again with the same settings gives the same answers."""
    return (
        f"Rerunning will not change these answers: change prompts.{kind} (ask for the label as the first word), "
        f"teachers.{teacher}.enable_thinking (false: the chat template's non-thinking mode) or the model; or, if "
        f"a low mass is expected, lower teachers.{teacher}.min_token_mass (default: scoring.min_token_mass): the "
        "stored answers are then re-assembled without asking the teacher again."
    )


def mass_summary(mass: pl.Series, min_token_mass: float | None) -> dict[str, Any]:
    """Distribution of the answer-token mass over the rows that have one (refused rows included)."""
    values = mass.drop_nulls().cast(pl.Float64).to_numpy()
    values = values[np.isfinite(values)]
    out: dict[str, Any] = {"rows": int(values.size), "min_token_mass": min_token_mass}
    if min_token_mass is not None:
        out["below_min"] = int((values < min_token_mass).sum())
    if values.size:
        out |= {
            "min": float(values.min()),
            "mean": float(values.mean()),
            "max": float(values.max()),
            "quantiles": {f"{q:g}": float(np.quantile(values, q)) for q in MASS_QUANTILES},
        }
        counts, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=10, range=(0.0, 1.0))
        out["histogram"] = {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}
    return out


def assemble(
    rows: list[dict[str, Any]],
    schema: dict[str, pl.DataType],
    out: Path,
    min_token_mass: float | None,
    max_error_fraction: float,
    advice: str,
    key: str,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The artifact's table (sorted by ``key``) and its summary; TeacherError when more than
    ``max_error_fraction`` of the rows failed, saying why (answers that were not labels, or requests)."""
    table = pl.DataFrame(rows, schema=schema).sort(key) if rows else pl.DataFrame(schema=schema)
    n_err = int(table["error"].is_not_null().sum()) if table.height else 0
    n_unanswered = int(table["error"].str.starts_with(NOT_ANSWERED).sum()) if table.height else 0
    summary = {
        "rows": table.height,
        "failed_rows": n_err,
        "not_answered_rows": n_unanswered,
        "token_mass": mass_summary(table["token_mass"], min_token_mass) if table.height else {},
    }
    if table.height and n_err / table.height > max_error_fraction:
        head = f"{out}: {n_err} of {table.height} rows failed (> scoring.max_error_fraction={max_error_fraction})"
        if n_unanswered * 2 >= n_err:
            m = summary["token_mass"]
            first = table.filter(pl.col("error").str.starts_with(NOT_ANSWERED))["error"].head(2).to_list()
            raise TeacherError(
                f"{head}; {n_unanswered} of them because {NOT_ANSWERED} first (median answer-token mass "
                f"{m.get('quantiles', {}).get('0.5', float('nan')):.3g}, threshold {min_token_mass}). First: {first}. "
                f"{advice}"
            )
        first = table.filter(_retryable(pl.col("error")))["error"].head(3).to_list()
        raise TeacherError(
            f"{head}; first errors: {first}. Rerun to ask the teacher again for the failed requests "
            "(the answers received are in the teacher score store)."
        )
    if n_err:
        log.warning(
            "%s: %d of %d rows are error rows (%d answers that were not a label)",
            out,
            n_err,
            table.height,
            n_unanswered,
        )
    return table, summary


def add_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    """The shards' request counts added up."""
    keys = ("rows", "reused", "scored", "failed", "requests_sent", "parts_written")
    return {k: sum(int(c.get(k, 0)) for c in counts) for k in keys}


def images_by_row(
    items: Sequence[Any], row_key: Callable[[Any], Any], paths: Callable[[Any], Sequence[str]]
) -> dict[Any, Sequence[str]]:
    return {row_key(it): paths(it) for it in items}
