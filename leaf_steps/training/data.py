"""Manifest images for the student: rows with their origin, datasets, an in-memory cache, loaders.

- Rows of the manifest (``image_id``, ``path``) become :class:`ImageRow`; a missing or
  undecodable file is an :class:`InputError` naming the file, the manifest and the row.
  Images are decoded by :func:`leaf_steps.training.transforms.decode` (the decoder of every
  stage, JPEGs at the DCT scale just above ``resize``).
- :class:`ImageDataset` does the deterministic shorter-side resize itself, so that its output
  can be cached in memory across epochs (in-process loading only, up to a byte budget): small
  datasets are then decoded once, not once per epoch. The rest of the transform (training
  augmentation, or the eval crop) is applied per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from PIL import Image

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_parquet
from leaf_steps.images import load_rgb
from leaf_steps.training.transforms import decode, resize_shorter

# Resized images kept in memory across epochs (per process); beyond this, images are re-decoded.
DEFAULT_CACHE_BYTES = 2 * 1024**3
MANIFEST_COLUMNS = ("image_id", "path", "split")


@dataclass(frozen=True)
class ImageRow:
    """One manifest image, with where it came from for error messages."""

    image_id: str
    path: Path
    row: int  # 0-based row in the manifest file
    manifest: str

    def where(self) -> str:
        return f"manifest {self.manifest}, row {self.row}, image_id {self.image_id!r}"


def read_manifest(path: str | Path) -> pl.DataFrame:
    """The manifest with a ``row`` column (0-based file row); image ids must be unique and non-null."""
    df = read_parquet(path, required=MANIFEST_COLUMNS).with_row_index("row")
    for col in ("image_id", "path", "split"):
        nulls = df.filter(pl.col(col).is_null())
        if nulls.height:
            raise InputError(f"{path}: row {nulls['row'][0]}: {col} is null")
    dup = df.filter(pl.col("image_id").is_duplicated())
    if dup.height:
        raise InputError(f"{path}: row {dup['row'][0]}: image_id {dup['image_id'][0]!r} is not unique")
    return df


def resolve_image_path(raw: str, manifest: str | Path) -> Path:
    """Absolute paths as written; relative ones against the working directory (where
    Snakemake runs), falling back to the manifest's folder."""
    p = Path(raw)
    if p.is_absolute() or p.exists():
        return p
    beside = Path(manifest).parent / p
    return beside if beside.exists() else p


def image_rows(
    manifest_df: pl.DataFrame, manifest_path: str | Path, ids: Iterable[str] | None = None
) -> list[ImageRow]:
    """ImageRows for ``ids`` (in that order) or for the whole manifest."""
    by_id = {r["image_id"]: r for r in manifest_df.select("image_id", "path", "row").iter_rows(named=True)}
    wanted = list(by_id) if ids is None else list(ids)
    rows = []
    for image_id in wanted:
        r = by_id.get(image_id)
        if r is None:
            raise InputError(f"{manifest_path}: image_id {image_id!r} is not in the manifest")
        rows.append(ImageRow(image_id, resolve_image_path(r["path"], manifest_path), int(r["row"]), str(manifest_path)))
    return rows


def check_images_exist(rows: Iterable[ImageRow]) -> None:
    """Fail before training, not hours into it, when an image file is missing."""
    missing = [r for r in rows if not r.path.is_file()]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise InputError(f"{first.path}: image file not found ({first.where()}){more}")


def load_image(row: ImageRow, resize: int | None = None) -> Image.Image:
    """Decode one image to RGB (in full, or with ``resize`` the way the student's transforms
    decode, :func:`~leaf_steps.training.transforms.decode`); any failure names the file and its row."""
    try:
        return load_rgb(row.path) if resize is None else decode(row.path, resize)
    except InputError as exc:
        raise InputError(f"{exc} ({row.where()})") from exc


class ImageCache:
    """Resized images kept in memory up to a byte budget (first come, first kept)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: dict[tuple[str, int], Image.Image] = {}

    def get(self, key: tuple[str, int]) -> Image.Image | None:
        return self._items.get(key)

    def put(self, key: tuple[str, int], image: Image.Image) -> None:
        size = image.width * image.height * len(image.getbands())
        if self.bytes + size <= self.max_bytes:
            self._items[key] = image
            self.bytes += size


class ImageDataset(torch.utils.data.Dataset):
    """Item i -> (transformed image tensor, i). The shorter-side resize to ``resize`` is done
    here (deterministic, so cacheable); ``transform`` is the rest (crop, flip, tensor)."""

    def __init__(self, rows: Sequence[ImageRow], transform, resize: int, cache: ImageCache | None = None):
        self.rows = list(rows)
        self.transform = transform
        self.resize = resize
        self.cache = cache

    def __len__(self) -> int:
        return len(self.rows)

    def resized(self, i: int) -> Image.Image:
        row = self.rows[i]
        key = (str(row.path), self.resize)
        image = self.cache.get(key) if self.cache is not None else None
        if image is None:
            image = resize_shorter(load_image(row, self.resize), self.resize)
            if self.cache is not None:
                self.cache.put(key, image)
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.resized(i)), i


def make_loader(
    dataset: torch.utils.data.Dataset,
    batches: Sequence[Sequence[int]],
    num_workers: int,
    seed: int,
    device: torch.device,
    collate_fn=None,
) -> torch.utils.data.DataLoader:
    """A loader that yields exactly ``batches`` (lists of dataset indices), in order.
    Worker RNGs derive from ``seed``, so augmentations repeat with the seed."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        collate_fn=collate_fn,
    )


def shared_cache(num_workers: int) -> ImageCache | None:
    """In-process loading shares one cache across epochs; worker processes would each keep
    their own copy (and lose it every epoch), so they decode instead."""
    return ImageCache() if num_workers == 0 else None
