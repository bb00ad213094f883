"""The dataset stage's image check: every image decoded once, in parallel, verdicts cached by fingerprint.

A header read (what the manifest's width/height needed before) passes a truncated JPEG, which
then fails hours later in training. So every image is decoded in full here, by the one decoder
every later stage uses (:func:`leaf_steps.images.load_rgb`), and every problem is collected
before anything is decided:

* the file cannot be decoded (truncated, corrupt, not an image, animated, 16-bit float
  outside [0, 1], ...): the decoder's own message, which starts with the path;
* more pixels than ``max_pixels`` (decompression bombs), refused from the header;
* shorter side below ``min_side`` (too small for the teacher or the student);
* longer/shorter side above ``max_aspect_ratio`` (the student's square crop would see a sliver).

Decoding is the cost (about 10 ms for a 1024x768 JPEG), so it runs in worker processes and
its result is remembered per file in a cache keyed by the file's fingerprint (resolved path,
size, mtime in ns) plus the decoder (its source and Pillow's version) and the pixel limit: a
rerun decodes only new or changed files. The cache is a hidden Parquet file in the dataset's
resources folder, replaced atomically; two runs writing it at once can only lose each other's
new entries (they are checked again next time), never corrupt a verdict.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import PIL
import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet
from leaf_steps.core.progress import progress
from leaf_steps.images import DEFAULT_MAX_PIXELS
from leaf_steps.images import decode as _decode_module
from leaf_steps.images.verdict import Verdict as DecodeVerdict
from leaf_steps.images.verdict import decode_chunk, decode_one

log = logging.getLogger("leaf.images.check")

CACHE_NAME = ".image_checks.parquet"
DEFAULT_MIN_SIDE = 32
DEFAULT_MAX_ASPECT_RATIO = 10.0
# Below this many files to decode, starting worker processes (about a second) costs more than it saves.
MIN_FILES_FOR_WORKERS = 64
# spawn, not fork: polars' thread pool in this process does not survive fork() (the child can deadlock).
_SPAWN = multiprocessing.get_context("spawn")
CACHE_SCHEMA = {
    "path": pl.String,
    "size": pl.Int64,
    "mtime_ns": pl.Int64,
    "checker": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
    "problem": pl.String,
}


@dataclass(frozen=True)
class Limits:
    """What an image must satisfy to enter the manifest (``dataset.max_pixels``, ``min_side``, ``max_aspect_ratio``)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO


@dataclass(frozen=True)
class Verdict:
    path: str
    width: int | None  # upright size, None when the file could not be decoded
    height: int | None
    problem: str | None  # None: usable

    @property
    def ok(self) -> bool:
        return self.problem is None


def checker_id(max_pixels: int) -> str:
    """Identity of a decode verdict: the decoder's source, Pillow's version and the pixel limit."""
    digest = hashlib.sha256(Path(_decode_module.__file__).read_bytes())
    digest.update(f"|pillow {PIL.__version__}|max_pixels {max_pixels}".encode())
    return digest.hexdigest()[:16]


def size_problem(path: str, width: int, height: int, limits: Limits) -> str | None:
    """Why an image of this (upright) size cannot be used, or None."""
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        return (
            f"{path}: {width}x{height} pixels; the shorter side is below dataset.min_side = {limits.min_side} "
            "(too small for the teacher or the student)"
        )
    if long / short > limits.max_aspect_ratio:
        return (
            f"{path}: {width}x{height} pixels, aspect ratio {long / short:.1f}:1 exceeds "
            f"dataset.max_aspect_ratio = {limits.max_aspect_ratio:g}"
        )
    return None


def _fingerprint(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def _load_cache(cache: Path | None) -> pl.DataFrame:
    if cache is None or not cache.exists():
        return pl.DataFrame(schema=CACHE_SCHEMA)
    try:
        df = read_parquet(cache, list(CACHE_SCHEMA))
        return df.select(list(CACHE_SCHEMA)).cast(CACHE_SCHEMA)
    except (InputError, pl.exceptions.PolarsError) as exc:  # a damaged cache costs a recheck, nothing else
        log.warning("ignoring the image-check cache %s (%s)", cache, exc)
        return pl.DataFrame(schema=CACHE_SCHEMA)


def _save_cache(cache: Path, old: pl.DataFrame, fresh: list[dict]) -> None:
    if not fresh:
        return
    new = pl.DataFrame(fresh, schema=CACHE_SCHEMA)
    # Entries of other files (other runs' folders) are kept; this run's files get their new verdicts.
    kept = old.filter(~pl.col("path").is_in(new["path"].implode()))
    try:
        write_parquet(
            pl.concat([kept, new]),
            cache,
            make_provenance(
                "image_check_cache", note="decode verdicts keyed by (path, size, mtime_ns, checker); safe to delete"
            ),
        )
    except OSError as exc:  # a read-only dataset folder: check again next time
        log.warning("cannot write the image-check cache %s (%s)", cache, exc)


def default_workers() -> int:
    """CPUs this process may use (the scheduler's allocation on a cluster node, not the node's size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def decode_all(
    paths: Sequence[str],
    max_pixels: int,
    workers: int,
    chunk_fn: Callable[[tuple[list[str], int]], list[DecodeVerdict]] = decode_chunk,
) -> list[DecodeVerdict]:
    """Decode verdicts of ``paths`` in order, over ``workers`` processes when it pays."""
    if not paths:
        return []
    desc = f"decode check of {len(paths)} image(s)"
    if workers <= 1 or len(paths) < MIN_FILES_FOR_WORKERS:
        return [decode_one(p, max_pixels) for p in progress(paths, total=len(paths), desc=desc)]
    # Chunks of a few dozen files: one pickling round trip per chunk, and a progress bar that moves.
    size = max(8, min(64, len(paths) // (workers * 8) or 8))
    chunks = [list(paths[i : i + size]) for i in range(0, len(paths), size)]
    out: list[DecodeVerdict] = []
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_SPAWN) as pool:
            results = pool.map(chunk_fn, [(chunk, max_pixels) for chunk in chunks])
            for result in progress(results, total=len(chunks), desc=f"{desc} ({workers} workers)"):
                out.extend(result)
    except BrokenProcessPool:
        # A decoder crashed its process (a native-library fault on a hostile file). Which file is not known:
        # the rest is checked one file per process, so that the culprit is named and nothing else is lost.
        log.warning(
            "a decoder crashed a worker process; checking the remaining %d file(s) one at a time", len(paths) - len(out)
        )
        out.extend(decode_isolated(list(paths[len(out) :]), max_pixels, chunk_fn))
    return out


ChunkFn = Callable[[tuple[list[str], int]], list[DecodeVerdict]]


def decode_isolated(paths: list[str], max_pixels: int, chunk_fn: ChunkFn = decode_chunk) -> list[DecodeVerdict]:
    """Each file in a worker process of its own turn; a file that kills its process is that file's problem."""
    out: list[DecodeVerdict] = []
    while len(out) < len(paths):
        with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as pool:
            futures = [pool.submit(chunk_fn, ([p], max_pixels)) for p in paths[len(out) :]]
            for future in futures:
                try:
                    out.extend(future.result())
                except BrokenProcessPool:
                    # One worker takes the files in turn: the first unfinished one is the culprit.
                    path = paths[len(out)]
                    out.append((None, None, f"{path}: cannot decode image (the decoder crashed its process)", False))
                    break
    return out


@dataclass
class CheckResult:
    verdicts: list[Verdict]  # in the order of the paths given
    decoded: int  # files decoded now (the others came from the cache)
    cached: int

    @property
    def problems(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]


def check_images(
    paths: Iterable[str | Path], limits: Limits, cache: Path | None = None, workers: int | None = None
) -> CheckResult:
    """Decode every image (or take its cached verdict) and apply ``limits``; never raises for a bad file."""
    paths = [str(p) for p in paths]
    workers = default_workers() if workers is None else max(1, workers)
    checker = checker_id(limits.max_pixels)
    old = _load_cache(cache)
    known = {row[0]: row for row in old.filter(pl.col("checker") == checker).iter_rows()}
    prints = [_fingerprint(p) for p in paths]
    decoded: dict[int, tuple[int | None, int | None, str | None]] = {}
    todo = []
    for i, (path, fp) in enumerate(zip(paths, prints, strict=True)):
        if fp is None:
            decoded[i] = (None, None, f"{path}: image file not found")
            continue
        hit = known.get(fp[0])
        if hit is not None and hit[1] == fp[1] and hit[2] == fp[2]:
            decoded[i] = (hit[4], hit[5], hit[6])
        else:
            todo.append(i)
    fresh_results = decode_all([paths[i] for i in todo], limits.max_pixels, workers)
    fresh_rows = []
    for i, (width, height, problem, final) in zip(todo, fresh_results, strict=True):
        decoded[i] = (width, height, problem)
        fp = prints[i]
        if final:  # a failure that may not recur (memory, a crash) is checked again next time
            fresh_rows.append(
                {
                    "path": fp[0],
                    "size": fp[1],
                    "mtime_ns": fp[2],
                    "checker": checker,
                    "width": width,
                    "height": height,
                    "problem": problem,
                }
            )
    if cache is not None:
        _save_cache(cache, old, fresh_rows)
    verdicts = []
    for i, path in enumerate(paths):
        width, height, problem = decoded[i]
        if problem is None and width is not None and height is not None:
            problem = size_problem(path, width, height, limits)
        verdicts.append(Verdict(path, width, height, problem))
    log.info(
        "image check: %d file(s) decoded, %d verdict(s) from the cache%s",
        len(todo),
        len(paths) - len(todo),
        f" ({cache})" if cache is not None else "",
    )
    return CheckResult(verdicts=verdicts, decoded=len(todo), cached=len(paths) - len(todo))
