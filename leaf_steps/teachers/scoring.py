"""The batch driver shared by teacher point and pair scoring.

Resumable: every batch of rows is written atomically to ``<resume_dir>/batch-NNNNNN.parquet``
as soon as it is scored, so a killed job loses at most the batch in flight. On a rerun,
finished batches are loaded and only their failed requests are scored again: a row whose
answer was not a label (:data:`leaf_steps.teachers.teacher_math.NOT_ANSWERED`) is kept, since the
same settings give the same answer. Per-item failures are rows with a non-null ``error``;
the shard is written only if the failure fraction is within ``max_error_fraction``
(otherwise a TeacherError says how many failed and why, and the rows stay in the resume
folder for the next attempt). When most failures are answers that were not a label, the
message says what to change (prompt, thinking mode, model), since rerunning cannot help.

The shard's provenance ``summary`` holds the row counts and the distribution of
``token_mass`` (quantiles, a 10-bin histogram on [0, 1], the rows below ``min_token_mass``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from leaf_steps.core.errors import TeacherError
from leaf_steps.core.io import read_parquet, write_json, write_parquet
from leaf_steps.core.progress import progress
from leaf_steps.teachers.teacher_math import NOT_ANSWERED

T = TypeVar("T")
log = logging.getLogger("leaf.scoring")


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


MASS_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)


def answer_advice(kind: str, teacher: str) -> str:
    """What to change when the teacher does not answer with a label (the kind's prompt, the thinking
    mode, the model or the threshold): rerunning with the same settings gives the same answers."""
    return (f"Rerunning will not change these answers: change prompts.{kind} (ask for the label as the first word), "
            f"teachers.{teacher}.enable_thinking (false: the chat template's non-thinking mode) or the model; or, if "
            f"a low mass is expected, lower teachers.{teacher}.min_token_mass (default: scoring.min_token_mass).")


def mass_summary(mass: pl.Series, min_token_mass: float | None) -> dict[str, Any]:
    """Distribution of the answer-token mass over the rows that have one (refused rows included)."""
    values = mass.drop_nulls().cast(pl.Float64).to_numpy()
    values = values[np.isfinite(values)]
    out: dict[str, Any] = {"rows": int(values.size), "min_token_mass": min_token_mass}
    if min_token_mass is not None:
        out["below_min"] = int((values < min_token_mass).sum())
    if values.size:
        out |= {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max()),
                "quantiles": {f"{q:g}": float(np.quantile(values, q)) for q in MASS_QUANTILES}}
        counts, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=10, range=(0.0, 1.0))
        out["histogram"] = {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}
    return out


def _retryable(error: pl.Expr) -> pl.Expr:
    """Failed rows worth asking again: not those the teacher answered with something else."""
    return error.is_not_null() & ~error.str.starts_with(NOT_ANSWERED)


def run_batches(
    items: Sequence[T],
    score_batch: Callable[[Sequence[T]], list[dict[str, Any]]],
    item_key: Callable[[T], Any],
    row_key: str,
    out: Path,
    provenance: dict[str, Any],
    resume_dir: Path,
    batch_size: int,
    max_error_fraction: float,
    desc: str,
    schema: dict[str, pl.DataType],
    min_token_mass: float | None = None,
    answer_advice: str = "",
    item_images: Callable[[T], Sequence[str]] | None = None,
) -> pl.DataFrame:
    out, resume_dir = Path(out), Path(resume_dir)
    stamp = resume_dir / "provenance.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("resume_key") != provenance.get("resume_key"):
        # Parts from a run with other settings (teacher, prompt, sharding) must not be reused.
        log.info("%s: discarding stale partial results in %s", desc, resume_dir)
        shutil.rmtree(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, provenance)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    frames = []
    resumed = 0
    for b, batch in enumerate(progress(batches, total=len(batches), desc=desc)):
        part = resume_dir / f"batch-{b:06d}.parquet"
        previous = read_parquet(part) if part.exists() else None
        if previous is not None and previous.columns != list(schema):
            previous = None  # written by a version with other columns: score the batch again
        if previous is not None and previous.height == len(batch) and not previous.select(
                _retryable(pl.col("error")).any()).item():
            frames.append(previous)
            resumed += 1
            continue
        if previous is not None and previous.height == len(batch):
            # Keep what succeeded (and answers that were not a label); ask again only failed requests.
            ok = previous.filter(~_retryable(pl.col("error")))
            done = set(ok[row_key].to_list())
            todo = [it for it in batch if item_key(it) not in done]
            fresh = pl.DataFrame(score_batch(todo), schema=schema)
            frame = pl.concat([ok, fresh], how="vertical_relaxed")
        else:
            frame = pl.DataFrame(score_batch(batch), schema=schema)
        write_parquet(frame, part, provenance | {"batch": b})
        frames.append(frame)
    if resumed:
        log.info("%s: resumed %d finished batch(es) from %s", desc, resumed, resume_dir)
    result = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=schema)
    n_err = result["error"].drop_nulls().len() if result.height else 0
    n_unanswered = int(result["error"].str.starts_with(NOT_ANSWERED).sum()) if result.height else 0
    summary = {"rows": result.height, "failed_rows": int(n_err), "not_answered_rows": n_unanswered,
               "token_mass": mass_summary(result["token_mass"], min_token_mass) if result.height else {}}
    if result.height and n_err / result.height > max_error_fraction:
        failed = result.filter(pl.col("error").is_not_null())
        head = (f"{out}: {n_err} of {result.height} rows failed (> scoring.max_error_fraction={max_error_fraction})")
        if n_unanswered * 2 >= n_err:
            m = summary["token_mass"]
            first = failed.filter(pl.col("error").str.starts_with(NOT_ANSWERED))["error"].head(2).to_list()
            raise TeacherError(
                f"{head}; {n_unanswered} of them because {NOT_ANSWERED} first (median answer-token mass "
                f"{m.get('quantiles', {}).get('0.5', float('nan')):.3g}, threshold {min_token_mass}). First: {first}. "
                f"{answer_advice}")
        raise TeacherError(too_many_failures(result, items, item_key, row_key, item_images, out, resume_dir,
                                             max_error_fraction))
    if n_err:
        log.warning("%s: %d of %d rows failed and are kept as error rows", desc, n_err, result.height)
    write_parquet(result, out, provenance | {"summary": summary})
    shutil.rmtree(resume_dir, ignore_errors=True)
    log.info("%s: wrote %s (%d rows, %d failed)", desc, out, result.height, n_err)
    return result


def unusable_images(failed: pl.DataFrame, items: Sequence[T], item_key: Callable[[T], Any], row_key: str,
                    item_images: Callable[[T], Sequence[str]]) -> tuple[dict[str, str], set[Any]]:
    """Images of failed rows that cannot be used at all, so their rows would fail again: (path -> problem,
    keys of the rows they sank). Only images the error text names are decoded again (cheap: a server
    outage names no image)."""
    from leaf_steps.images.verdict import decode_one
    from leaf_steps.images import DEFAULT_MAX_PIXELS

    by_key = {item_key(it): it for it in items}
    problems: dict[str, str | None] = {}
    sunk = set()
    for key, error in failed.select(row_key, "error").iter_rows():
        item = by_key.get(key)
        if item is None:
            continue
        for path in item_images(item):
            if path not in str(error):
                continue
            if path not in problems:
                problems[path] = decode_one(path, DEFAULT_MAX_PIXELS)[2]
            if problems[path] is not None:
                sunk.add(key)
    return {p: why for p, why in problems.items() if why is not None}, sunk


def too_many_failures(result: pl.DataFrame, items: Sequence[T], item_key: Callable[[T], Any], row_key: str,
                      item_images: Callable[[T], Sequence[str]] | None, out: Path, resume_dir: Path,
                      max_error_fraction: float) -> str:
    """Why the shard fails: failures that will fail again (unusable images, named) apart from those a rerun may fix."""
    failed = result.filter(pl.col("error").is_not_null())
    head = (f"{out}: {failed.height} of {result.height} rows failed (> scoring.max_error_fraction="
            f"{max_error_fraction})")
    bad, sunk = unusable_images(failed, items, item_key, row_key, item_images) if item_images else ({}, set())
    others = failed.filter(~pl.col(row_key).is_in(list(sunk)))
    retryable = others.filter(_retryable(pl.col("error")))
    unanswered = others.height - retryable.height
    parts = [head + "."]
    if bad:
        listing = "\n".join(f"    {why}" for why in bad.values())
        parts.append(f"  {len(sunk)} row(s) failed because {len(bad)} image(s) cannot be used, and will fail again on "
                     f"a rerun:\n{listing}\n  Fix or remove these files and rerun the dataset stage (with "
                     "dataset.on_bad_image: drop it leaves unusable images out and lists them), or raise "
                     "scoring.max_error_fraction.")
    if unanswered:
        parts.append(f"  {unanswered} row(s): {NOT_ANSWERED} first (see the rows' errors); a rerun gives the same answers.")
    if retryable.height:
        first = retryable["error"].head(3).to_list()
        parts.append(f"  {retryable.height} row(s) failed otherwise; first errors: {first}. Successful rows are kept "
                     f"in {resume_dir}; rerun to retry the failed requests.")
    else:
        parts.append(f"  Successful rows are kept in {resume_dir}.")
    return "\n".join(parts)
