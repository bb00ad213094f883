"""Bring your own images: a folder (searched recursively) plus an optional MOS CSV for some of them.

Options (``dataset.options``):
* ``images_dir`` (required): the folder; image ids are paths relative to it (``sub/a.jpg``);
* ``mos_csv``: CSV with columns ``image,mos``; ``image`` is that relative path, or a bare file
  name when it is unique in the folder. Images not in the CSV are unlabelled (mos null, train);
* ``mos_scale``: free text recorded in the provenance (e.g. "1..5 ACR").

Labelled images are split train/test by ``split_seed`` and ``test_fraction``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.datasets.common import (
    IMAGE_EXTENSIONS,
    DatasetSettings,
    Prepared,
    check_names,
    list_images,
    manifest_frame,
    parse_mos_column,
    random_split,
    read_csv_strings,
    relative_hashes,
    require_columns,
    split_counts,
)

log = logging.getLogger("leaf.datasets.folder")

NAME = "folder"
OPTIONS = {
    "images_dir": "the folder of images, searched recursively (required)",
    "mos_csv": "CSV with columns image,mos for the labelled images (optional)",
    "mos_scale": "free text recorded in the provenance, e.g. '1..5 ACR'",
}


def check_options(settings: DatasetSettings) -> None:
    if not settings.option("images_dir", None, kind=str):
        raise ConfigError("dataset.options.images_dir: required for dataset folder (a folder of images)")
    settings.option("mos_csv", None, kind=str)
    settings.option("mos_scale", None, kind=str)


def _images_dir(settings: DatasetSettings) -> Path:
    raw = settings.option("images_dir", None, kind=str)
    if not raw:
        raise ConfigError("dataset.options.images_dir: required for dataset folder (a folder of images)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: images folder not found (dataset.options.images_dir)")
    return path


def scan(images_dir: Path) -> dict[str, Path]:
    """image_id (relative posix path) -> file, for every image below ``images_dir``."""
    found = {p.relative_to(images_dir).as_posix(): p for p in list_images(images_dir)}
    if not found:
        raise InputError(f"{images_dir}: no images found (searched recursively for {'/'.join(IMAGE_EXTENSIONS)})")
    return found


def read_mos_csv(path: Path, images: dict[str, Path], images_dir: Path) -> dict[str, float]:
    """image_id -> MOS for the rows of ``path``; each bad row is an InputError naming its line."""
    df = read_csv_strings(path)
    require_columns(df, path, ["image", "mos"])
    if df.height == 0:
        raise InputError(f"{path}: no data rows")
    names = check_names(df["image"].to_list(), path, "image", first_line=2)
    mos = parse_mos_column(df["mos"].to_list(), path, "mos", first_line=2)
    by_basename: dict[str, list[str]] = {}
    for image_id in images:
        by_basename.setdefault(Path(image_id).name, []).append(image_id)
    labelled: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for i, (name, value) in enumerate(zip(names, mos, strict=True)):
        line = i + 2
        key = name.replace("\\", "/")
        while key.startswith("./"):
            key = key[2:]
        if key not in images:
            candidates = by_basename.get(Path(key).name, []) if "/" not in key else []
            if len(candidates) > 1:
                raise InputError(
                    f"{path}: line {line}: image {name!r} matches several files: {candidates}; "
                    "give the path relative to dataset.options.images_dir"
                )
            if not candidates:
                raise InputError(f"{path}: line {line}: image {name!r} not found in {images_dir}")
            key = candidates[0]
        if key in labelled:
            raise InputError(f"{path}: line {line}: image {name!r} is the same file as line {first_line[key]}")
        labelled[key] = float(value)
        first_line[key] = line
    return labelled


def _load(settings: DatasetSettings):
    images_dir = _images_dir(settings)
    images = scan(images_dir)
    mos_csv = settings.option("mos_csv", None, kind=str)
    labelled = read_mos_csv(Path(mos_csv).expanduser(), images, images_dir) if mos_csv else {}
    return images_dir, images, (Path(mos_csv).expanduser() if mos_csv else None), labelled


def fetch(root: Path, settings: DatasetSettings, client: httpx.Client | None = None) -> dict[str, Any]:
    """Nothing to download: check that the folder and the CSV are usable."""
    images_dir, images, mos_csv, labelled = _load(settings)
    return {
        "images_dir": str(images_dir),
        "images": len(images),
        "labelled": len(labelled),
        "label_files": relative_hashes(images_dir, [mos_csv]) if mos_csv else {},
        "warnings": [],
    }


def prepare(root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> Prepared:
    folder, images, mos_csv, labelled = _load(settings)
    ids = list(images)
    labelled_ids = [i for i in ids if i in labelled]
    split_of = dict(
        zip(labelled_ids, random_split(labelled_ids, settings.test_fraction, settings.split_seed), strict=True)
    )
    splits = [split_of.get(i, "train") for i in ids]
    if labelled_ids and "test" not in split_of.values():
        log.warning("folder: only %d labelled image(s): no test split", len(labelled_ids))
    protocol = {
        "split": "random over labelled images; unlabelled images go to train",
        "seed": settings.split_seed,
        "test_fraction": settings.test_fraction,
        "counts": split_counts(splits),
        "labelled": len(labelled_ids),
        "unlabelled": len(ids) - len(labelled_ids),
        "images_dir": str(folder),
        "mos_scale": settings.option("mos_scale", None, kind=str),
    }
    frame = manifest_frame(ids, [images[i] for i in ids], [labelled.get(i) for i in ids], splits)
    sources = relative_hashes(folder, [mos_csv]) if mos_csv else {}
    return Prepared(frame=frame, source_files=sources, protocol=protocol)
