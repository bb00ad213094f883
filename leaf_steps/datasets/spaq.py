"""SPAQ: 11,125 smartphone photos, MOS 0..100, placed by hand (cloud drives only).

Layout after extraction: ``TestImage/00001.jpg ...`` and
``Annotations/MOS and Image attribute scores.xlsx`` (columns ``Image name, MOS, Brightness,
Colorfulness, Contrast, Noisiness, Sharpness``). As in the authors' code, images are resized
so that the short side is 512 before use; the copies go to ``--images-dir``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from PIL import Image

from leaf_steps.core.errors import ConfigError, InputError, LeafError
from leaf_steps.core.io import new_file_mode
from leaf_steps.core.progress import progress
from leaf_steps.datasets.common import (
    DOWNLOADS_DIRNAME,
    RELEASE_OPTIONS,
    DatasetSettings,
    Labels,
    Prepared,
    check_count,
    check_names,
    check_placed,
    find_one,
    image_size,
    index_by_name,
    list_images,
    load_placed,
    manifest_frame,
    parse_mos_column,
    random_split,
    relative_hashes,
    require_placed_file,
    resolve_images,
    split_counts,
)
from leaf_steps.images import load_rgb, probe

log = logging.getLogger("leaf.datasets.spaq")

NAME = "spaq"
PUBLISHED_IMAGES = 11_125
LABEL_FILE = "MOS and Image attribute scores.xlsx"
IMAGE_DIR = "TestImage"
NAME_COLUMN = "Image name"
MOS_COLUMN = "MOS"
ATTRIBUTE_COLUMNS = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
DEFAULT_SHORT_SIDE = 512
JPEG_QUALITY = 95
OPTIONS = {
    "resize_short_side": "short side of the resized copies (default 512; null keeps the originals)",
    **RELEASE_OPTIONS,
}
REPAIR_HINT = (
    "SPAQ ships as a split zip (SPAQ.zip + SPAQ.z01, SPAQ.z02, ...), which Python and plain `unzip` cannot "
    "read. Put all parts in one folder and repair it first:\n"
    "  zip -FF SPAQ.zip --out SPAQ_fixed.zip && unzip SPAQ_fixed.zip\n"
    "then place the extracted folder (or SPAQ_fixed.zip) as described above."
)


def instructions(root: Path) -> str:
    return (
        "SPAQ must be downloaded by hand (cloud drives only):\n"
        "  authors' page: https://github.com/h4nwei/SPAQ (links to Baidu Yun, code b29m, and Google Drive)\n"
        "  fetch the image archive (TestImage) and the Annotations folder.\n"
        f"Place under {root}/ either the extracted folders\n"
        f"  {root}/<any folder>/{IMAGE_DIR}/00001.jpg ... 11125.jpg\n"
        f"  {root}/<any folder>/Annotations/{LABEL_FILE}\n"
        f"or a repaired single-part archive (.zip/.tar) in {root}/ or {root / DOWNLOADS_DIRNAME}/, which is "
        "extracted here.\n" + REPAIR_HINT
    )


def read_labels(path: Path) -> Labels:
    """The annotations workbook: first sheet, header row 1; errors name the sheet row."""
    try:
        import openpyxl
    except ImportError as exc:
        raise LeafError("reading SPAQ's .xlsx annotations needs openpyxl: pip install openpyxl") from exc
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException for bad files
        raise InputError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()
    if not rows:
        raise InputError(f"{path}: the first sheet is empty")
    header = [str(c).strip() if c is not None else "" for c in rows[0]]
    missing = [c for c in (NAME_COLUMN, MOS_COLUMN) if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} in row 1; has {[h for h in header if h]}")
    body = rows[1:]
    while body and all(c is None or str(c).strip() == "" for c in body[-1]):
        body.pop()  # trailing blank rows that spreadsheet tools leave behind
    if not body:
        raise InputError(f"{path}: no data rows")
    col = {name: header.index(name) for name in header if name}

    def cell(row: tuple, name: str) -> Any:
        return row[col[name]] if col[name] < len(row) else None  # read-only sheets drop trailing empty cells

    names = check_names([cell(r, NAME_COLUMN) for r in body], path, NAME_COLUMN, first_line=2, unit="row")
    mos = parse_mos_column([cell(r, MOS_COLUMN) for r in body], path, MOS_COLUMN, first_line=2, unit="row")
    labels = Labels(source=path, names=names, mos=mos, line_of={n: i + 2 for i, n in enumerate(names)}, unit="row")
    for attr in ATTRIBUTE_COLUMNS:
        if attr in col:
            values = [cell(r, attr) for r in body]
            labels.extras[attr.lower()] = [float(v) if isinstance(v, (int, float)) else None for v in values]
    return labels


def _load(root: Path, settings: DatasetSettings):
    def attempt():
        labels = read_labels(require_placed_file(root, LABEL_FILE, instructions(root)))
        image_dir = find_one(root, IMAGE_DIR, want_dir=True, exclude=[root / DOWNLOADS_DIRNAME])
        if image_dir is None:
            raise InputError(f"{root}: no {IMAGE_DIR}/ folder with the images found.\n{instructions(root)}")
        index, dupes = index_by_name(list_images(image_dir))
        paths = resolve_images(labels.names, index, dupes, labels.source, labels.line_of, image_dir, unit="row")
        return labels, paths

    (labels, paths), archives = load_placed(root, attempt, REPAIR_HINT)
    warnings = check_count(len(labels), PUBLISHED_IMAGES, settings, "labelled images", labels.source)
    return labels, paths, archives, warnings


def fetch(root: Path, settings: DatasetSettings, client: httpx.Client | None = None) -> dict[str, Any]:
    """Print where SPAQ comes from, then check what the user placed (extracting a placed archive)."""
    return check_placed(root, settings, _load, instructions(root))


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """torchvision ``Resize(short_side)`` arithmetic: short side exact, long side truncated."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def resize_copy(src: Path, dst: Path, short_side: int) -> tuple[int, int]:
    """Write ``src`` resized to ``dst`` (atomic) unless it is there already; returns dst's size.

    Like the authors' ``Image_load``: bilinear, and images already smaller than ``short_side``
    are kept at their size. JPEG ``draft`` lets the decoder shrink by 1/2..1/8 while decoding,
    which makes 12-megapixel photos several times faster to process.
    """
    if dst.exists():
        return image_size(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Upright (EXIF orientation applied) and in 8-bit RGB like every other stage: the copy carries no EXIF.
    info = probe(src)
    width, height = info.width, info.height
    target = (width, height) if min(width, height) <= short_side else resized_size(width, height, short_side)
    try:
        out = load_rgb(src, draft_size=target)
    except InputError as exc:
        raise InputError(f"{exc}; a damaged file from a broken archive? Re-extract it from the repaired zip") from exc
    if out.size != target:
        out = out.resize(target, Image.Resampling.BILINEAR)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.fchmod(fd, new_file_mode())  # mkstemp's 0600 would hide the copies from colleagues
    os.close(fd)
    try:
        out.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out.size


def check_options(settings: DatasetSettings) -> None:
    _short_side(settings)


def _short_side(settings: DatasetSettings) -> int | None:
    short_side = settings.option("resize_short_side", DEFAULT_SHORT_SIDE, kind=int)
    if short_side is not None and short_side < 16:
        raise ConfigError(
            f"dataset.options.resize_short_side: {short_side} is too small (>= 16, or null to keep the originals)"
        )
    return short_side


def prepare(root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> Prepared:
    """The manifest of the original photos; :func:`derive` then resizes the ones that passed the image check."""
    labels, sources, _archives, warnings = _load(root, settings)
    short_side = _short_side(settings)
    splits = random_split(labels.names, settings.test_fraction, settings.split_seed)
    extras = dict(labels.extras)
    extras["source_path"] = [str(p) for p in sources]
    protocol = {
        "split": "random",
        "seed": settings.split_seed,
        "test_fraction": settings.test_fraction,
        "counts": split_counts(splits),
        "mos_scale": "0..100",
        "resize_short_side": short_side,
        "resize": "bilinear, short side to resize_short_side (no upscaling), JPEG q95",
        "warnings": warnings,
    }
    frame = manifest_frame(labels.names, sources, labels.mos.tolist(), splits, extras=extras)
    return Prepared(frame=frame, source_files=relative_hashes(root, [labels.source]), protocol=protocol)


def derive(frame: pl.DataFrame, root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> pl.DataFrame:
    """Resized copies of the photos that passed the image check: ``path``, ``width`` and ``height``
    become the copy's (``source_path`` keeps the original)."""
    short_side = _short_side(settings)
    if short_side is None:
        return frame
    # A subfolder per size: changing the option never mixes copies of two sizes.
    out_dir = (images_dir or root / "resized") / f"short{short_side}"
    paths, widths, heights = [], [], []
    pairs = list(zip(frame["image_id"].to_list(), frame["source_path"].to_list(), strict=True))
    for name, src in progress(pairs, total=len(pairs), desc=f"SPAQ resize -> {out_dir}"):
        dst = out_dir / Path(name).with_suffix(".jpg").name
        width, height = resize_copy(Path(src), dst, short_side)
        paths.append(str(dst))
        widths.append(width)
        heights.append(height)
    return frame.with_columns(
        pl.Series("path", paths, dtype=pl.String),
        pl.Series("width", widths, dtype=pl.Int32),
        pl.Series("height", heights, dtype=pl.Int32),
    )
