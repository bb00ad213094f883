"""sha256 of image files, remembered per file fingerprint: the key of every teacher answer.

The teacher score store (:mod:`leaf_steps.teachers.store`) keys an answer by the bytes the teacher
read, so the dataset stage hashes every image once and carries the hash in its image list; the scoring
jobs never hash. Hashing reads each file once (the image check has just read it: it is usually still
in the page cache), in threads (hashlib releases the GIL on large buffers). Hashes are cached like the
image check's verdicts: by resolved path, size and mtime (ns), in a hidden Parquet file in the dataset's
resources folder, replaced atomically (two runs writing it at once can only lose each other's new
entries, which are hashed again next time). A file edited in place gets a new mtime, so a new hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet

log = logging.getLogger("leaf.images.content_hash")

CACHE_NAME = ".image_sha256.parquet"
CACHE_SCHEMA = {"path": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64, "sha256": pl.String}
CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file to hash it ({exc})") from exc
    return digest.hexdigest()


def _fingerprint(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file to hash it ({exc})") from exc
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def _load_cache(cache: Path | None) -> pl.DataFrame:
    if cache is None or not cache.exists():
        return pl.DataFrame(schema=CACHE_SCHEMA)
    try:
        return read_parquet(cache, list(CACHE_SCHEMA)).select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)
    except (InputError, pl.exceptions.PolarsError) as exc:  # a damaged cache costs hashing again, nothing else
        log.warning("ignoring the content-hash cache %s (%s)", cache, exc)
        return pl.DataFrame(schema=CACHE_SCHEMA)


def sha256_files(paths: Iterable[str | Path], cache: Path | None = None, workers: int = 4) -> list[str]:
    """sha256 hex of each file, in order (cached by fingerprint); InputError naming a file that cannot be read."""
    paths = [str(p) for p in paths]
    prints = [_fingerprint(p) for p in paths]
    old = _load_cache(cache)
    known = {row[0]: row for row in old.iter_rows()}
    hashes: list[str | None] = []
    todo: list[int] = []
    for i, fp in enumerate(prints):
        hit = known.get(fp[0])
        if hit is not None and hit[1] == fp[1] and hit[2] == fp[2]:
            hashes.append(hit[3])
        else:
            hashes.append(None)
            todo.append(i)
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, digest in zip(todo, pool.map(file_sha256, [paths[i] for i in todo]), strict=True):
                hashes[i] = digest
        if cache is not None:
            fresh = pl.DataFrame(
                [
                    {"path": prints[i][0], "size": prints[i][1], "mtime_ns": prints[i][2], "sha256": hashes[i]}
                    for i in todo
                ],
                schema=CACHE_SCHEMA,
            )
            kept = old.filter(~pl.col("path").is_in(fresh["path"].implode()))
            try:
                write_parquet(
                    pl.concat([kept, fresh]),
                    cache,
                    make_provenance(
                        "content_hash_cache",
                        note="sha256 of image files keyed by (path, size, mtime_ns); safe to delete",
                    ),
                )
            except OSError as exc:  # a read-only dataset folder: hash again next time
                log.warning("cannot write the content-hash cache %s (%s)", cache, exc)
    log.info(
        "content hashes: %d file(s) hashed, %d from the cache%s",
        len(todo),
        len(paths) - len(todo),
        f" ({cache})" if cache is not None else "",
    )
    return [h for h in hashes if h is not None]
