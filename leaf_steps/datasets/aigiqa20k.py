"""AIGIQA-20K (NTIRE 2024, "AIGCQA-30K-Image"): only the 14,000 labelled training images are used.

``info_train.csv`` has NO header: ``name,prompt,mos`` (MOS ~0..5); images ``train/<name>.png``
(e.g. ``DALLE2_0000.png``). The validation and test MOS were never published, so the only
reproducible protocol re-splits these 14,000 images (seeded random 80/20). Results on it are
not comparable with the challenge's official test numbers; say so wherever they are reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from leaf_steps.core.errors import InputError
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
    require_placed_file,
    resolve_images,
    split_counts,
)

log = logging.getLogger("leaf.datasets.aigiqa20k")

NAME = "aigiqa20k"
PUBLISHED_LABELLED = 14_000
LABEL_FILE = "info_train.csv"
COLUMNS = ("name", "prompt", "mos")
IMAGE_DIR = "train"
OPTIONS = dict(RELEASE_OPTIONS)


def instructions(root: Path) -> str:
    return (
        "AIGIQA-20K must be downloaded by hand:\n"
        "  ModelScope dataset lcysyzxdxc/AIGCQA-30K-Image\n"
        "  (https://www.modelscope.cn/datasets/lcysyzxdxc/AIGCQA-30K-Image)\n"
        "  fetch info_train.csv and the training images (train/); val/test carry no public MOS and are not used.\n"
        f"Place under {root}/, e.g.\n"
        f"  {root}/AIGCQA-30K-Image/info_train.csv   (no header row: name,prompt,mos)\n"
        f"  {root}/AIGCQA-30K-Image/{IMAGE_DIR}/DALLE2_0000.png ...\n"
        f"or the downloaded archive(s) (.zip/.tar) in {root}/ or {root / DOWNLOADS_DIRNAME}/, which are extracted here."
    )


def generator_of(name: str) -> str:
    """``DALLE2_0000.png`` -> ``DALLE2``: everything before the last underscore."""
    stem = Path(name).stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def read_labels(path: Path) -> Labels:
    df = read_csv_strings(path, has_header=False)
    if df.width != len(COLUMNS):
        raise InputError(f"{path}: expected {len(COLUMNS)} columns (name,prompt,mos, no header row), found {df.width}")
    df = df.rename(dict(zip(df.columns, COLUMNS, strict=True)))
    first_mos = (df["mos"][0] or "").strip().lower() if df.height else ""
    if first_mos == "mos":
        raise InputError(
            f"{path}: line 1 is a header row; the official info_train.csv has none (name,prompt,mos) "
            "- remove that line or use the file as released"
        )
    labels = labels_from_strings(df, path, "name", "mos", first_line=1)
    labels.extras["prompt"] = [p if p is not None else "" for p in df["prompt"].to_list()]
    labels.extras["generator"] = [generator_of(n) for n in labels.names]
    return labels


def _image_root(label_path: Path, root: Path) -> Path:
    """The ``train/`` folder next to the label file when there is one, else everything below root."""
    beside = label_path.parent / IMAGE_DIR
    return beside if beside.is_dir() else root


def _load(root: Path, settings: DatasetSettings):
    def attempt():
        labels = read_labels(require_placed_file(root, LABEL_FILE, instructions(root)))
        image_root = _image_root(labels.source, root)
        index, dupes = index_by_name(list_images(image_root, exclude=[root / DOWNLOADS_DIRNAME]))
        paths = resolve_images(labels.names, index, dupes, labels.source, labels.line_of, image_root)
        return labels, paths

    (labels, paths), archives = load_placed(root, attempt)
    warnings = check_count(len(labels), PUBLISHED_LABELLED, settings, "labelled images", labels.source)
    return labels, paths, archives, warnings


def fetch(root: Path, settings: DatasetSettings, client: httpx.Client | None = None) -> dict[str, Any]:
    return check_placed(root, settings, _load, instructions(root))


def prepare(root: Path, settings: DatasetSettings, images_dir: Path | None = None) -> Prepared:
    labels, paths, _archives, warnings = _load(root, settings)
    splits = random_split(labels.names, settings.test_fraction, settings.split_seed)
    protocol = {
        "split": "random re-split of the 14,000 labelled training images (official val/test MOS unpublished)",
        "seed": settings.split_seed,
        "test_fraction": settings.test_fraction,
        "counts": split_counts(splits),
        "mos_scale": "about 0..5",
        "warnings": warnings,
    }
    frame = manifest_frame(labels.names, paths, labels.mos.tolist(), splits, extras=labels.extras)
    return Prepared(frame=frame, source_files=relative_hashes(root, [labels.source]), protocol=protocol)
