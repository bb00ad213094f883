"""Step: the run's manifest (image_id, path, mos, split, width, height, extras) from a benchmark's label
files, every image checked; see :mod:`leaf_steps.datasets.preparation` for the protocol.

    python -m leaf_steps.prepare_dataset --dataset spaq --resources-dir resources \\
        --settings '{"name": "spaq", "split_seed": 0, "test_fraction": 0.2}' \\
        --image-list results/run/dataset/images.parquet --out results/run/dataset/manifest.parquet
"""

from __future__ import annotations

from collections.abc import Sequence

from leaf_steps.core.cli import run_step
from leaf_steps.datasets.preparation import run


def main(argv: Sequence[str] | None = None) -> None:
    run_step(run, argv)


if __name__ == "__main__":
    main()
