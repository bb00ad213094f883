"""The batch driver shared by teacher point and pair scoring.

Resumable: every batch of rows is written atomically to ``<resume_dir>/batch-NNNNNN.parquet``
as soon as it is scored, so a killed job loses at most the batch in flight. On a rerun,
finished batches are loaded and only their failed rows are scored again. Per-item failures
are rows with a non-null ``error``; the shard is written only if the failure fraction is
within ``max_error_fraction`` (otherwise a TeacherError says how many failed, and the
successful rows stay in the resume folder for the next attempt).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from leaf_steps.errors import TeacherError
from leaf_steps.io import read_parquet, write_json, write_parquet
from leaf_steps.progress import progress

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
        if previous is not None and previous.height == len(batch) and previous["error"].null_count() == previous.height:
            frames.append(previous)
            resumed += 1
            continue
        if previous is not None and previous.height == len(batch):
            # Keep what succeeded; score only the rows that failed last time.
            ok = previous.filter(pl.col("error").is_null())
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
    summary = {"rows": result.height, "failed_rows": int(n_err)}
    if result.height and n_err / result.height > max_error_fraction:
        first = result.filter(pl.col("error").is_not_null())["error"].head(3).to_list()
        raise TeacherError(
            f"{out}: {n_err} of {result.height} rows failed (> scoring.max_error_fraction={max_error_fraction}); "
            f"first errors: {first}. Successful rows are kept in {resume_dir}; rerun to retry the failed rows.")
    if n_err:
        log.warning("%s: %d of %d rows failed and are kept as error rows", desc, n_err, result.height)
    write_parquet(result, out, provenance | {"summary": summary})
    shutil.rmtree(resume_dir, ignore_errors=True)
    log.info("%s: wrote %s (%d rows, %d failed)", desc, out, result.height, n_err)
    return result
