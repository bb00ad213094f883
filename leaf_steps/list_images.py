"""Step: the split-free image list (image_id, path, sha256, width, height) of a benchmark: the images
the manifest will hold, every one checked, with the sha256 of each file's bytes (cached by file
fingerprint). Teacher scoring reads this list, not the manifest, so a new split rescores nothing.
See :mod:`leaf_steps.datasets.preparation`.

    python -m leaf_steps.list_images --dataset spaq --resources-dir resources --settings '{...}' \\
        --out-image-list results/run/dataset/images.parquet
"""

from __future__ import annotations

from collections.abc import Sequence

from leaf_steps.core.cli import run_step
from leaf_steps.datasets.preparation import run


def main(argv: Sequence[str] | None = None) -> None:
    run_step(run, argv)


if __name__ == "__main__":
    main()
