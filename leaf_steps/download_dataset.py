"""Step: make a benchmark's files available under ``<resources-dir>/<dataset>/``.

KonIQ-10k is downloaded over HTTP (resumable, checksummed) and extracted; SPAQ, AGIQA-3K and
AIGIQA-20K live on cloud drives, so the step prints what to fetch and where to put it, then
checks what was placed; ``folder`` checks the user's folder. On success it writes the marker
JSON (files, their sha256, counts, warnings) that later steps depend on. The marker belongs to
the run (``results/<run>/dataset/download.json`` in the workflow): the files under
``<resources-dir>/<dataset>/`` are shared by every run and depend on no run's options.

    python -m leaf_steps.download_dataset --dataset koniq10k --resources-dir resources \\
        --settings '{"name": "koniq10k", "options": {"resolution": "512x384"}}' \\
        --out-marker results/run/dataset/download.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.io import make_provenance, write_json
from leaf_steps.datasets import DATASETS, dataset_settings, get_dataset

log = logging.getLogger("leaf.download_dataset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m leaf_steps.download_dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--resources-dir", required=True, type=Path, help="datasets go to <dir>/<dataset>/")
    parser.add_argument("--settings", type=json_arg, default={}, help="the config's `dataset` block as JSON")
    parser.add_argument("--out-marker", required=True, type=Path, help="marker JSON written on success")
    return parser


def run(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = dataset_settings(args.dataset, args.settings)
    adapter = get_dataset(args.dataset)
    root = args.resources_dir / args.dataset
    facts = adapter.fetch(root, settings)
    marker = make_provenance(
        "download_dataset", dataset=args.dataset, root=str(root), settings=settings.as_dict(), ready=True, **facts
    )
    write_json(args.out_marker, marker)
    log.info("%s ready under %s (%s images); marker %s", args.dataset, root, facts.get("images"), args.out_marker)
    return marker


def main(argv: Sequence[str] | None = None) -> None:
    run_step(run, argv)


if __name__ == "__main__":
    main()
