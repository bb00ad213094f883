"""Step: parse a benchmark's label files into the manifest (image_id, path, mos, split, width, height, extras).

Splits: KonIQ-10k official train/val/test by default; seeded random train/test for SPAQ,
AGIQA-3K, AIGIQA-20K (the 14,000 labelled images) and the labelled part of ``folder``.
SPAQ images are resized (short side 512 by default) into ``--images-dir``, resumably.
The provenance records the dataset, the label files' sha256 and the protocol.

    python -m leaf_steps.prepare_dataset --dataset spaq --resources-dir resources \\
        --settings '{"name": "spaq", "split_seed": 0, "test_fraction": 0.2}' \\
        --out results/run/dataset/manifest.parquet --images-dir resources/spaq_derived
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.cli import json_arg, run_step
from leaf_steps.datasets import DATASETS, get_dataset
from leaf_steps.datasets.common import DatasetSettings
from leaf_steps.io import make_provenance, write_parquet

log = logging.getLogger("leaf.prepare_dataset")
MARKER_NAME = ".ready.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leaf_steps.prepare_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--resources-dir", required=True, type=Path, help="the dataset is read from <dir>/<dataset>/")
    parser.add_argument("--settings", type=json_arg, default={}, help="the config's `dataset` block as JSON")
    parser.add_argument("--out", required=True, type=Path, help="manifest Parquet file")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="where derived images (SPAQ resized copies) are written; "
                             "default <resources-dir>/<dataset>/resized")
    return parser


def _download_record(root: Path) -> dict:
    """The archives' sha256 from the download marker, so the manifest names the exact release used."""
    marker = root / MARKER_NAME
    if not marker.exists():
        return {}
    try:
        data = json.loads(marker.read_text())
    except ValueError:
        return {}
    return {"files": data.get("files", {}), "created_utc": data.get("created_utc")}


def run(argv: Sequence[str] | None = None) -> pl.DataFrame:
    args = build_parser().parse_args(argv)
    settings = DatasetSettings.from_mapping(args.settings, args.dataset)
    adapter = get_dataset(args.dataset)
    root = args.resources_dir / args.dataset
    prepared = adapter.prepare(root, settings, args.images_dir)
    provenance = make_provenance("prepare_dataset", dataset=args.dataset, settings=settings.as_dict(),
                                 source_files=prepared.source_files, protocol=prepared.protocol,
                                 download=_download_record(root), n_images=prepared.frame.height)
    write_parquet(prepared.frame, args.out, provenance)
    log.info("%s: %d images, splits %s -> %s", args.dataset, prepared.frame.height,
             prepared.protocol.get("counts"), args.out)
    return prepared.frame


def main(argv: Sequence[str] | None = None) -> None:
    run_step(run, argv)


if __name__ == "__main__":
    main()
