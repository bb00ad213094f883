"""AGIQA-3K: 2,982 AI-generated images, quality MOS ``mos_quality`` (~0..5), placed by hand.

Label file ``data.csv`` (``name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align``);
image names are ``<generator>_<variant>_<NNN>.jpg`` (e.g. ``AttnGAN_normal_000.jpg``,
``sd1.5_lowstep_012.jpg``). ``mos_align`` (text alignment) is not the quality score and is
not used. No official split: a seeded random 80/20.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from leaf_steps.datasets.common import (
    DOWNLOADS_DIRNAME,
    RELEASE_OPTIONS,
    DatasetSettings,
    Labels,
    Prepared,
    check_count,
    check_placed,
    index_by_name,
    labels_from_strings,
    list_images,
    load_placed,
    manifest_frame,
    random_split,
    read_csv_strings,
    relative_hashes,
    require_columns,
    require_placed_file,
    resolve_images,
    split_counts,
)

log = logging.getLogger("leaf.datasets.agiqa3k")

NAME = "agiqa3k"
PUBLISHED_IMAGES = 2_982
LABEL_FILE = "data.csv"
NAME_COLUMN = "name"
MOS_COLUMN = "mos_quality"
REQUIRED_COLUMNS = ("name", "prompt", "mos_quality")
OPTIONS = dict(RELEASE_OPTIONS)


def instructions(root: Path) -> str:
    return (
        "AGIQA-3K must be downloaded by hand (cloud drives only):\n"
        "  authors' repository: https://github.com/lcysyzxdxc/AGIQA-3k-Database (Google Drive or Baidu Yun,\n"
        "  extraction code AIGC); data.csv (the labels) is also in that repository.\n"
        f"Place under {root}/ the extracted images and data.csv, e.g.\n"
        f"  {root}/AGIQA-3K/data.csv\n"
        f"  {root}/AGIQA-3K/<images>/AttnGAN_normal_000.jpg ... (any folder depth below {root})\n"
        f"or the downloaded archive (.zip/.tar) in {root}/ or {root / DOWNLOADS_DIRNAME}/, which is extracted here."
    )


def generator_of(name: str) -> str:
    """``sd1.5_lowstep_012.jpg`` -> ``sd1.5``: the model that generated the image."""
    return name.split("_", 1)[0]


def variant_of(name: str) -> str | None:
    """``sd1.5_lowstep_012.jpg`` -> ``lowstep`` (generation setting), None when the name has no such part."""
    parts = Path(name).stem.split("_")
    return parts[1] if len(parts) >= 3 else None


def read_labels(path: Path) -> Labels:
    df = read_csv_strings(path)
    require_columns(df, path, REQUIRED_COLUMNS)
    labels = labels_from_strings(df, path, NAME_COLUMN, MOS_COLUMN, first_line=2)
    labels.extras["prompt"] = [p if p is not None else "" for p in df["prompt"].to_list()]
    labels.extras["generator"] = [generator_of(n) for n in labels.names]
    labels.extras["variant"] = [variant_of(n) for n in labels.names]
    return labels


def _load(root: Path, settings: DatasetSettings):
    def attempt():
        labels = read_labels(require_placed_file(root, LABEL_FILE, instructions(root)))
        # The archive's folder layout is not documented, so images are found by name anywhere below root.
        index, dupes = index_by_name(list_images(root, exclude=[root / DOWNLOADS_DIRNAME]))
        paths = resolve_images(labels.names, index, dupes, labels.source, labels.line_of, root)
        return labels, paths

    (labels, paths), archives = load_placed(root, attempt)
    warnings = check_count(len(labels), PUBLISHED_IMAGES, settings, "labelled images", labels.source)
    return labels, paths, archives, warnings


def fetch(root: Path, settings: DatasetSettings, client: httpx.Client | None = None) -> dict[str, Any]:
    return check_placed(root, settings, _load, instructions(root))


def prepare(root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> Prepared:
    labels, paths, _archives, warnings = _load(root, settings)
    splits = random_split(labels.names, settings.test_fraction, settings.split_seed)
    protocol = {
        "split": "random",
        "seed": settings.split_seed,
        "test_fraction": settings.test_fraction,
        "counts": split_counts(splits),
        "mos_column": MOS_COLUMN,
        "mos_scale": "about 0..5 (mos_quality)",
        "warnings": warnings,
    }
    frame = manifest_frame(labels.names, paths, labels.mos.tolist(), splits, extras=labels.extras)
    return Prepared(frame=frame, source_files=relative_hashes(root, [labels.source]), protocol=protocol)
