"""Results of a long ``leaf predict`` kept on disk as they come, so a killed run resumes.

Beside the output ``<out>`` the run keeps ``<out>.partial/``: ``job.json`` (the model id, the
runtime and the eval transform: what a score depends on) and ``part-<n>.parquet`` files, each
written atomically (temp file + rename) with the scores of the images finished since the last
one. A rerun with the same job reads them back and skips every image whose path, size and
modification time match a stored score; a different job (another model or transform) discards
them with a warning. Files that failed are not stored: a rerun tries them again. When the
output is written, the folder is removed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.io import (
    atomic_write_text,
    make_provenance,
    read_parquet,
    write_parquet,
)

log = logging.getLogger("leaf.predict.resume")

PART_SCHEMA = {"absolute": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64, "score": pl.Float64}
Key = tuple[str, int, int]


def partial_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class PartialResults:
    def __init__(self, out: str | Path, job: dict[str, Any]):
        self.dir = partial_dir(out)
        self.job = job
        self.pending: list[tuple[str, int, int, float]] = []
        self.parts = 0

    def load(self) -> dict[Key, float]:
        """Scores finished by an earlier run of the same job (empty when there is none)."""
        job_file = self.dir / "job.json"
        if not self.dir.exists():
            return {}
        try:
            previous = json.loads(job_file.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != self.job:
            log.warning(
                "%s: partial results of a different job (model, runtime or transform changed); discarding them",
                self.dir,
            )
            shutil.rmtree(self.dir)
            return {}
        files = sorted(self.dir.glob("part-*.parquet"))
        done: dict[Key, float] = {}
        for f in files:
            df = read_parquet(f, required=list(PART_SCHEMA))
            for a, size, mtime, score in df.select(list(PART_SCHEMA)).iter_rows():
                done[(a, size, mtime)] = score
        self.parts = len(files)
        if done:
            log.info("%s: resuming; %d image(s) already scored in %d part file(s)", self.dir, len(done), len(files))
        return done

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "job.json", json.dumps(self.job, sort_keys=True))

    def add(self, key: Key, score: float) -> None:
        self.pending.append((*key, score))

    def flush(self) -> None:
        if not self.pending:
            return
        df = pl.DataFrame(self.pending, schema=PART_SCHEMA, orient="row")
        write_parquet(df, self.dir / f"part-{self.parts:06d}.parquet", make_provenance("predict.partial", job=self.job))
        self.parts += 1
        self.pending = []

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
