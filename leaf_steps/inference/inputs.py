"""What ``leaf predict`` scores: any mix of image files, folders, CSV / text lists and manifests.

Each argument is, by what it is on disk:

* a folder: every image below it (recursively, the extensions Pillow decodes, hidden entries
  skipped), sorted by path -- :func:`leaf_steps.datasets.common.list_images`, the scan the
  ``folder`` dataset uses;
* ``*.parquet``: a manifest (LEAF's ``dataset/manifest.parquet`` or any table with a ``path``
  column), in row order;
* ``*.csv``: a table with a ``path`` column (or ``image``, or a single column), in row order;
* ``*.txt`` / ``*.lst`` / ``*.list``: one path per line (blank lines and ``#`` comments skipped);
* anything else: one image file.

Relative paths inside a list or manifest are taken as written when they exist from the working
directory, else relative to the list's folder (as manifests are read everywhere in LEAF).
The order is the order of the arguments, then of each folder scan or list: deterministic.
A path listed twice is scored once, at its first place (the log says how many). A listed
file that does not exist, or an argument that is neither, becomes an error row; a list or
manifest that cannot be read is an error naming the file (nothing would tell which images
it meant).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_parquet
from leaf_steps.datasets.common import list_images
from leaf_steps.training.data import resolve_image_path

log = logging.getLogger("leaf.predict.inputs")

LIST_SUFFIXES = (".txt", ".lst", ".list")
PATH_COLUMNS = ("path", "image", "file", "filename")


@dataclass(frozen=True)
class InputImage:
    """One image to score: its path as listed (the output's ``path``), the absolute path
    (the identity used for duplicates and resuming) and an error when it cannot even be tried."""

    path: str
    absolute: str
    error: str | None = None


def _from_csv(path: Path) -> list[str]:
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # polars raises several types for malformed CSV
        raise InputError(f"{path}: not a readable CSV list of images ({exc})") from exc
    column = next((c for c in PATH_COLUMNS if c in df.columns), None)
    if column is None and len(df.columns) == 1:
        column = df.columns[0]
    if column is None:
        raise InputError(f"{path}: no column named one of {list(PATH_COLUMNS)} (columns: {df.columns})")
    values = df[column].to_list()
    missing = [i for i, v in enumerate(values) if v is None or not v.strip()]
    if missing:
        raise InputError(f"{path}: line {missing[0] + 2}: empty {column!r} ({len(missing)} empty row(s) in all)")
    return [v.strip() for v in values]


def _from_text(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable text list of images ({exc})") from exc
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _from_manifest(path: Path) -> list[str]:
    df = read_parquet(path, required=["path"])
    nulls = df.with_row_index("row").filter(pl.col("path").is_null())
    if nulls.height:
        raise InputError(f"{path}: row {nulls['row'][0]}: path is null ({nulls.height} null row(s) in all)")
    return df["path"].cast(pl.String).to_list()


def expand(argument: str) -> list[str]:
    """The image paths one argument stands for (see the module docstring)."""
    p = Path(argument)
    if p.is_dir():
        found = [str(f) for f in list_images(p)]
        if not found:
            log.warning("%s: no images found in this folder (searched recursively)", p)
        return found
    suffix = p.suffix.lower()
    if p.is_file() and suffix in (".parquet", ".csv", *LIST_SUFFIXES):
        listed = (_from_manifest if suffix == ".parquet" else _from_csv if suffix == ".csv" else _from_text)(p)
        return [str(resolve_image_path(raw, p)) for raw in listed]
    return [argument]


def collect(arguments: Sequence[str]) -> tuple[list[InputImage], dict[str, int]]:
    """Every image the arguments name, in order, once each; missing files carry an error."""
    items: list[InputImage] = []
    seen: set[str] = set()
    duplicates = 0
    for argument in arguments:
        for path in expand(argument):
            absolute = os.path.abspath(path)
            if absolute in seen:
                duplicates += 1
                continue
            seen.add(absolute)
            p = Path(path)
            error = None
            if p.is_dir():
                error = f"{path}: is a folder inside a list (list its images, or pass the folder itself)"
            elif not p.is_file():
                error = f"{path}: image file not found"
            items.append(InputImage(path=path, absolute=absolute, error=error))
    if duplicates:
        log.warning("%d path(s) were listed more than once; each is scored once, at its first place", duplicates)
    return items, {
        "listed": len(items) + duplicates,
        "unique": len(items),
        "duplicates": duplicates,
        "not_found": sum(i.error is not None for i in items),
    }
