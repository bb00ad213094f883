"""Parse a benchmark's label files into the manifest (image_id, path, mos, split, width, height, extras).

Splits: KonIQ-10k official train/val/test by default; seeded random train/test for SPAQ,
AGIQA-3K, AIGIQA-20K (the 14,000 labelled images) and the labelled part of ``folder``.
Every image is then decoded in full, in parallel, with verdicts cached by file fingerprint
(:mod:`leaf_steps.images.check`); every unusable image (unreadable, truncated, over
``dataset.max_pixels``, shorter side under ``dataset.min_side``, aspect ratio over
``dataset.max_aspect_ratio``) is collected first. With ``dataset.on_bad_image: fail`` (the
default) the step then fails listing all of them; with ``drop`` it leaves them out and lists
them in ``--bad-images`` (CSV: image_id, path, problem, labelled, split), which is written on
every run (header only when nothing was dropped). Splits are drawn before anything is dropped,
so fixing a file later does not move the other images between splits. SPAQ images that passed
are then resized (short side 512 by default) into ``--images-dir``, resumably. The provenance
records the dataset, the label files' sha256, the protocol and the image check.

With ``--out-image-list`` instead of ``--out`` the step writes the split-free image list instead
(image_id, path, sha256, width, height: the images the manifest will hold, with the sha256 of each
file's bytes, cached by fingerprint, :mod:`leaf_steps.images.content_hash`). Teacher scoring reads
that list, not the manifest, so a new split (``split_seed``, ``test_fraction``; the workflow leaves them
out of the list's settings) reruns no scoring job. Given ``--image-list``, the manifest step checks
that it holds exactly the listed images.

    python -m leaf_steps.prepare_dataset --dataset spaq --resources-dir resources \\
        --settings '{"name": "spaq", "split_seed": 0, "test_fraction": 0.2}' \\
        --out results/run/dataset/manifest.parquet --bad-images results/run/dataset/bad_images.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import json_arg
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_text, make_provenance, read_parquet, write_parquet
from leaf_steps.datasets import DATASETS, dataset_settings, get_dataset
from leaf_steps.datasets.common import split_counts
from leaf_steps.datasets.labels_check import small_test_split_warning
from leaf_steps.images.check import CACHE_NAME, check_images, default_workers
from leaf_steps.images.content_hash import CACHE_NAME as HASH_CACHE_NAME
from leaf_steps.images.content_hash import sha256_files

log = logging.getLogger("leaf.prepare_dataset")
LEGACY_MARKER = ".ready.json"
REPORT_COLUMNS = ("image_id", "path", "problem", "labelled", "split")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m leaf_steps.prepare_dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--resources-dir", required=True, type=Path, help="the dataset is read from <dir>/<dataset>/")
    parser.add_argument("--settings", type=json_arg, default={}, help="the config's `dataset` block as JSON")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="manifest Parquet file")
    out.add_argument("--out-image-list", type=Path, help="write the split-free image list (with sha256) instead")
    parser.add_argument(
        "--image-list",
        type=Path,
        default=None,
        help="the image list written by --out-image-list: the manifest must hold exactly its images",
    )
    parser.add_argument(
        "--bad-images",
        type=Path,
        default=None,
        help="CSV of the images left out (default: bad_images.csv next to --out)",
    )
    parser.add_argument(
        "--download-marker",
        type=Path,
        default=None,
        help="the download step's marker JSON, whose archive sha256 go into the provenance",
    )
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: the CPUs available)")
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="where derived images (SPAQ resized copies) are written; default <resources-dir>/<dataset>/resized",
    )
    return parser


def _download_record(marker: Path | None) -> dict:
    """The archives' sha256 from the download marker, so the manifest names the exact release used."""
    if marker is None or not marker.exists():
        return {}
    try:
        data = json.loads(marker.read_text())
    except ValueError:
        return {}
    return {"files": data.get("files", {}), "created_utc": data.get("created_utc")}


def report_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def failure_message(rows: list[dict], total: int, report: Path) -> str:
    listing = "\n".join(f"  {r['problem']}" for r in rows)
    return (
        f"{len(rows)} of {total} images cannot be used (dataset.on_bad_image: fail):\n{listing}\n"
        "Fix or remove these files, or set dataset.on_bad_image: drop to leave them out of the manifest "
        f"(they are then listed in {report})."
    )


IMAGE_LIST_SCHEMA = {
    "image_id": pl.String,
    "path": pl.String,
    "sha256": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
}


def write_image_list(
    frame: pl.DataFrame, out: Path, dataset: str, settings, root: Path, dropped: int, check
) -> pl.DataFrame:
    """The split-free list of the images the manifest holds, with each file's sha256 (teacher scoring's input)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        cache: Path | None = root / HASH_CACHE_NAME
    except OSError:
        cache = None
    hashes = sha256_files(frame["path"].to_list(), cache=cache)
    listed = (
        frame.select("image_id", "path", "width", "height")
        .with_columns(pl.Series("sha256", hashes, dtype=pl.String))
        .select(list(IMAGE_LIST_SCHEMA))
        .cast(IMAGE_LIST_SCHEMA)
    )
    provenance = make_provenance(
        "list_images",
        dataset=dataset,
        settings=settings.as_dict(),
        n_images=listed.height,
        distinct_contents=listed["sha256"].n_unique(),
        dropped=dropped,
        image_check={"decoded": check.decoded, "from_cache": check.cached},
    )
    write_parquet(listed, out, provenance)
    log.info("%s: %d images (%d distinct contents) -> %s", dataset, listed.height, listed["sha256"].n_unique(), out)
    return listed


def check_against_image_list(frame: pl.DataFrame, image_list: Path) -> None:
    """The manifest's images must be the listed ones (files changed between the two steps otherwise)."""
    listed = read_parquet(image_list, ["image_id", "path"]).select("image_id", "path")
    mine = frame.select("image_id", "path")
    extra, lacking = (
        mine.join(listed, on=["image_id", "path"], how="anti"),
        listed.join(mine, on=["image_id", "path"], how="anti"),
    )
    if extra.height or lacking.height:
        raise InputError(
            f"{image_list}: the dataset's images changed since the image list was made "
            f"({extra.height} not listed, e.g. {extra['path'].head(3).to_list()}; {lacking.height} listed "
            f"but gone, e.g. {lacking['path'].head(3).to_list()}); rerun the workflow"
        )


def run(argv: Sequence[str] | None = None) -> pl.DataFrame:
    args = build_parser().parse_args(argv)
    settings = dataset_settings(args.dataset, args.settings)
    adapter = get_dataset(args.dataset)
    root = args.resources_dir / args.dataset
    report = args.bad_images or (args.out or args.out_image_list).parent / "bad_images.csv"
    prepared = adapter.prepare(root, settings, args.images_dir)
    frame = prepared.frame
    try:  # the verdict cache lives with the dataset's files (for folder: resources/folder/, keyed by full path)
        root.mkdir(parents=True, exist_ok=True)
        cache: Path | None = root / CACHE_NAME
    except OSError:
        cache = None
    check = check_images(
        frame["path"].to_list(), settings.limits, cache=cache, workers=args.workers or default_workers()
    )
    rows = [
        {"image_id": image_id, "path": v.path, "problem": v.problem, "labelled": mos is not None, "split": split}
        for image_id, mos, split, v in zip(frame["image_id"], frame["mos"], frame["split"], check.verdicts, strict=True)
        if not v.ok
    ]
    if rows and settings.on_bad_image == "fail":
        raise InputError(failure_message(rows, frame.height, report))
    keep = [v.ok for v in check.verdicts]
    before = split_counts(frame["split"].to_list())
    frame = frame.with_columns(
        pl.Series("width", [v.width for v in check.verdicts], dtype=pl.Int32),
        pl.Series("height", [v.height for v in check.verdicts], dtype=pl.Int32),
    )
    frame = frame.filter(pl.Series(keep))
    if frame.height == 0:
        raise InputError(f"{args.dataset}: every image was left out as unusable; see {report}")
    derive = getattr(adapter, "derive", None)
    if derive is not None:
        frame = derive(frame, root, settings, args.images_dir)
    if args.out_image_list is not None:
        return write_image_list(frame, args.out_image_list, args.dataset, settings, root, len(rows), check)
    if args.image_list is not None:
        check_against_image_list(frame, args.image_list)
    protocol = dict(prepared.protocol)
    protocol["counts"] = split_counts(frame["split"].to_list())
    warnings = list(protocol.get("warnings") or [])
    labelled_test = int(frame.filter((pl.col("split") == "test") & pl.col("mos").is_not_null()).height)
    if (message := small_test_split_warning(labelled_test)) is not None:
        log.warning(message)
        warnings.append(message)
    image_check = {
        "decoded": check.decoded,
        "from_cache": check.cached,
        "limits": settings.limits.__dict__,
        "on_bad_image": settings.on_bad_image,
        "dropped": len(rows),
        "dropped_labelled": sum(r["labelled"] for r in rows),
        "counts_before": before,
        "report": str(report),
    }
    if rows:
        message = (
            f"{len(rows)} of {len(keep)} images left out as unusable (dataset.on_bad_image: drop), "
            f"{image_check['dropped_labelled']} of them labelled; list: {report}"
        )
        log.warning(message)
        warnings.append(message)
    protocol["warnings"] = warnings
    atomic_write_text(report, report_csv(rows))
    provenance = make_provenance(
        "prepare_dataset",
        dataset=args.dataset,
        settings=settings.as_dict(),
        source_files=prepared.source_files,
        protocol=protocol,
        image_check=image_check,
        download=_download_record(args.download_marker or root / LEGACY_MARKER),
        n_images=frame.height,
    )
    write_parquet(frame, args.out, provenance)
    log.info("%s: %d images, splits %s -> %s", args.dataset, frame.height, protocol["counts"], args.out)
    return frame
