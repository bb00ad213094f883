"""KonIQ-10k: 10,073 in-the-wild photos, official HTTP archives, official 7,058/1,000/2,015 split.

Files (see docs/datasets.md):
* ``koniq10k_<resolution>.zip`` with the images in a ``<resolution>/`` folder;
* ``koniq10k_scores_and_distributions.zip`` with ``koniq10k_scores_and_distributions.csv``
  (``image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore``; MOS on 1..5, MOS_zscore ~0..100);
* ``koniq10k_distributions_sets.csv`` from the authors' repository (``...,set`` with
  training/validation/test), needed for the official split only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from leaf_steps.core.errors import InputError, LeafError
from leaf_steps.datasets.common import (
    DOWNLOADS_DIRNAME,
    RELEASE_OPTIONS,
    DatasetSettings,
    Labels,
    Prepared,
    check_count,
    check_names,
    download,
    extract_archive,
    find_one,
    index_by_name,
    labels_from_strings,
    list_images,
    manifest_frame,
    random_split,
    read_csv_strings,
    relative_hashes,
    require_columns,
    resolve_images,
    split_counts,
)

log = logging.getLogger("leaf.datasets.koniq10k")

NAME = "koniq10k"
PUBLISHED_IMAGES = 10_073
OFFICIAL_COUNTS = {"train": 7_058, "val": 1_000, "test": 2_015}
RESOLUTIONS = ("1024x768", "512x384")
# The authors' archive host serves plain HTTP (its TLS certificate has been reported expired);
# integrity comes from dataset.options.checksums, not from the transport.
DEFAULT_BASE_URL = "http://datasets.vqa.mmsp-kn.de/archives"
DEFAULT_SPLIT_URL = "https://raw.githubusercontent.com/subpic/koniq/master/metadata/koniq10k_distributions_sets.csv"
SCORES_ARCHIVE = "koniq10k_scores_and_distributions.zip"
SCORES_CSV = "koniq10k_scores_and_distributions.csv"
SPLIT_CSV = "koniq10k_distributions_sets.csv"
SCORE_COLUMNS = ("image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore")
SPLIT_COLUMNS = ("image_name", "set")
SET_NAMES = {"training": "train", "validation": "val", "test": "test"}
MOS_SCALES = {"MOS": "1..5 (mean of the 5-point ratings)", "MOS_zscore": "about 0..100 (rescaled z-scores)"}
OPTIONS = {
    "resolution": f"image archive: one of {list(RESOLUTIONS)} (default 1024x768)",
    "split": "official (the authors' split file) or random (seeded train/test)",
    "mos_column": f"one of {list(MOS_SCALES)} (default MOS)",
    "base_url": "archive host (default: the authors')",
    "split_url": "URL of the official split file",
    "download_retries": "resume attempts within one run (default 3)",
    "retry_wait_s": "base wait between attempts in seconds (default 2)",
    **RELEASE_OPTIONS,
}


@dataclass(frozen=True)
class KoniqOptions:
    resolution: str
    split: str
    mos_column: str
    base_url: str
    split_url: str
    retries: int
    retry_wait_s: float

    @classmethod
    def from_settings(cls, settings: DatasetSettings) -> KoniqOptions:
        return cls(
            resolution=settings.option("resolution", "1024x768", choices=RESOLUTIONS),
            split=settings.option("split", "official", choices=("official", "random")),
            mos_column=settings.option("mos_column", "MOS", choices=tuple(MOS_SCALES)),
            base_url=str(settings.option("base_url", DEFAULT_BASE_URL, kind=str)).rstrip("/"),
            split_url=settings.option("split_url", DEFAULT_SPLIT_URL, kind=str),
            retries=settings.option("download_retries", 3, kind=int),
            retry_wait_s=float(settings.option("retry_wait_s", 2.0, kind=(int, float))),
        )

    @property
    def images_archive(self) -> str:
        return f"koniq10k_{self.resolution}.zip"


def check_options(settings: DatasetSettings) -> None:
    KoniqOptions.from_settings(settings)


def split_file_hint(root: Path, opts: KoniqOptions) -> str:
    """What to do without the official split file (offline machines): place it, or use a random split."""
    return (
        f"The official split comes from {SPLIT_CSV} ({opts.split_url}). Offline, download it elsewhere and "
        f"place it at {root / DOWNLOADS_DIRNAME / SPLIT_CSV} (or anywhere below {root}/); or set "
        "dataset.options.split: random for a seeded train/test split that needs no file (not comparable with "
        "results on the official split)."
    )


def instructions(root: Path, opts: KoniqOptions) -> str:
    lines = [
        f"KonIQ-10k ({opts.resolution}) is downloaded over HTTP into {root / DOWNLOADS_DIRNAME}/ and extracted "
        f"into {root}/:",
        f"  {opts.base_url}/{opts.images_archive}",
        f"  {opts.base_url}/{SCORES_ARCHIVE}",
    ]
    if opts.split == "official":
        lines.append(f"  {opts.split_url}")
    lines.append(
        "Offline: put those files in the downloads folder yourself (they are then not fetched), "
        "or the extracted folder and CSVs anywhere below the dataset folder."
    )
    return "\n".join(lines)


def fetch(root: Path, settings: DatasetSettings, client: httpx.Client | None = None) -> dict[str, Any]:
    """Download (resumable, checksummed), extract, then check the result as ``prepare`` would.

    A file is fetched only when neither it nor its extracted content is there yet, so a copy
    placed by hand (offline) is used as is, and a rerun does no network traffic.
    """
    opts = KoniqOptions.from_settings(settings)
    downloads = root / DOWNLOADS_DIRNAME
    wanted = [
        (
            opts.images_archive,
            f"{opts.base_url}/{opts.images_archive}",
            lambda: find_one(root, opts.resolution, want_dir=True, exclude=[downloads]) is not None,
        ),
        (SCORES_ARCHIVE, f"{opts.base_url}/{SCORES_ARCHIVE}", lambda: find_one(root, SCORES_CSV) is not None),
    ]
    if opts.split == "official":
        wanted.append((SPLIT_CSV, opts.split_url, lambda: find_one(root, SPLIT_CSV) is not None))
    files: dict[str, dict[str, Any]] = {}
    for fname, url, content_present in wanted:
        dest = downloads / fname
        if not dest.exists() and content_present():
            log.info("%s: content of %s already present; not downloading it", root, fname)
            continue
        try:
            digest = download(
                url,
                dest,
                expected_sha256=settings.expected_checksum(fname),
                client=client,
                retries=opts.retries,
                retry_wait_s=opts.retry_wait_s,
            )
        except LeafError as exc:
            if fname != SPLIT_CSV:
                raise
            raise LeafError(f"{exc}\n{split_file_hint(root, opts)}") from exc
        files[f"{DOWNLOADS_DIRNAME}/{fname}"] = {"url": url, "sha256": digest, "bytes": dest.stat().st_size}
        if fname.endswith(".zip"):
            extract_archive(dest, root)  # idempotent: a stamp records what was extracted
    labels, split_file, image_paths, warnings = _load(root, settings, opts)
    label_files = [labels.source] + ([split_file.source] if split_file is not None else [])
    return {
        "files": files,
        "label_files": relative_hashes(root, label_files),
        "images": len(image_paths),
        "images_dir": str(image_paths[0].parent),
        "warnings": warnings,
    }


@dataclass
class _SplitFile:
    source: Path
    split_of: dict[str, str]


def read_scores(path: Path, mos_column: str) -> Labels:
    df = read_csv_strings(path)
    require_columns(df, path, SCORE_COLUMNS)
    labels = labels_from_strings(df, path, "image_name", mos_column, first_line=2)

    def as_float(col: str) -> pl.Series:
        # Extras are informative only: an unreadable value becomes null instead of stopping the run.
        return df[col].str.strip_chars().cast(pl.Float64, strict=False)

    labels.extras["sd"] = as_float("SD").to_list()
    labels.extras["n_ratings"] = as_float("c_total").cast(pl.Int32, strict=False).to_list()
    return labels


def read_official_split(path: Path, scores: Labels) -> _SplitFile:
    """image_name -> train/val/test from the authors' split file; it must cover exactly the scored images."""
    df = read_csv_strings(path)
    require_columns(df, path, SPLIT_COLUMNS)
    names = check_names(df["image_name"].to_list(), path, "image_name", first_line=2)
    split_of = {}
    for i, (name, raw) in enumerate(zip(names, df["set"].to_list(), strict=True)):
        value = (raw or "").strip()
        if value not in SET_NAMES:
            raise InputError(f"{path}: line {i + 2}: set {raw!r} is not one of {sorted(SET_NAMES)}")
        split_of[name] = SET_NAMES[value]
    missing = [n for n in scores.names if n not in split_of]
    if missing:
        raise InputError(
            f"{path}: no split for {len(missing)} image(s) of {scores.source.name}, e.g. "
            + ", ".join(f"{n} (line {scores.line_of[n]} there)" for n in missing[:5])
        )
    extra = [n for n in names if n not in scores.line_of]
    if extra:
        raise InputError(f"{path}: {len(extra)} image(s) not in {scores.source.name}, e.g. " + ", ".join(extra[:5]))
    return _SplitFile(source=path, split_of=split_of)


def _load(root: Path, settings: DatasetSettings, opts: KoniqOptions):
    downloads = root / DOWNLOADS_DIRNAME
    scores_path = find_one(root, SCORES_CSV)
    if scores_path is None:
        raise InputError(f"{root}: {SCORES_CSV} not found; run download_dataset first.\n{instructions(root, opts)}")
    labels = read_scores(scores_path, opts.mos_column)
    split_file = None
    if opts.split == "official":
        split_path = find_one(root, SPLIT_CSV)
        if split_path is None:
            raise InputError(
                f"{root}: {SPLIT_CSV} not found (needed by dataset.options.split: official).\n"
                f"{split_file_hint(root, opts)}"
            )
        split_file = read_official_split(split_path, labels)
    image_dir = find_one(root, opts.resolution, want_dir=True, exclude=[downloads])
    if image_dir is None:
        raise InputError(
            f"{root}: no folder named {opts.resolution!r} with the images; run download_dataset first.\n"
            f"{instructions(root, opts)}"
        )
    index, dupes = index_by_name(list_images(image_dir))
    paths = resolve_images(labels.names, index, dupes, labels.source, labels.line_of, image_dir)
    warnings = check_count(len(labels), PUBLISHED_IMAGES, settings, "labelled images", labels.source)
    return labels, split_file, paths, warnings


def prepare(root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> Prepared:
    opts = KoniqOptions.from_settings(settings)
    labels, split_file, paths, warnings = _load(root, settings, opts)
    if split_file is not None:
        splits = [split_file.split_of[n] for n in labels.names]
        protocol: dict[str, Any] = {
            "split": "official",
            "split_file": split_file.source.name,
            "published_counts": OFFICIAL_COUNTS,
        }
    else:
        splits = random_split(labels.names, settings.test_fraction, settings.split_seed)
        protocol = {"split": "random", "seed": settings.split_seed, "test_fraction": settings.test_fraction}
    protocol.update(
        {
            "counts": split_counts(splits),
            "resolution": opts.resolution,
            "mos_column": opts.mos_column,
            "mos_scale": MOS_SCALES[opts.mos_column],
            "warnings": warnings,
        }
    )
    frame = manifest_frame(labels.names, paths, labels.mos.tolist(), splits, extras=labels.extras)
    sources = [labels.source] + ([split_file.source] if split_file is not None else [])
    return Prepared(frame=frame, source_files=relative_hashes(root, sources), protocol=protocol)
