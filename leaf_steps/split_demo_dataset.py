"""Step: the demo's manifest from its split-free image list and labels, split by reference photo.

``leaf_steps.make_demo_dataset`` writes the images, the image list (teacher scoring's input) and the
synthetic labels, none of which depends on the split; this step adds the split
(:mod:`leaf_steps.datasets.demo`: ``split_seed``, ``test_fraction``), so a new split reruns only this
step and what reads the manifest, never teacher point scoring.

    python -m leaf_steps.split_demo_dataset --image-list images.parquet --labels demo_labels.parquet \\
        --settings '{"split_seed": 0, "test_fraction": 0.3}' --out manifest.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_parquet
from leaf_steps.datasets.demo import demo_manifest, resolve_split


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-list", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--settings", type=json_arg, required=True, help='{"split_seed": N, "test_fraction": F}')
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    split = resolve_split(a.settings)
    images = read_parquet(a.image_list, ["image_id", "path", "width", "height"]).select(
        "image_id", "path", "width", "height"
    )
    labels = read_parquet(a.labels, ["image_id", "mos", "photo", "reference", "distortion", "level"])
    manifest, splits = demo_manifest(images, labels, split["split_seed"], split["test_fraction"])
    facts = {k: v for k, v in read_provenance(a.labels).items() if k not in ("step", "created_utc", "versions")}
    write_parquet(
        manifest,
        a.out,
        make_provenance(
            "split_demo_dataset",
            **facts,
            split=split,
            split_references={part: sorted(n for n, sp in splits.items() if sp == part) for part in ("train", "test")},
        ),
    )


if __name__ == "__main__":
    run_step(main)
