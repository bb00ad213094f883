#!/usr/bin/env python3
"""Write the small "your own images" example that config/folder_example.yaml points at.

    python scripts/make_folder_example.py            # -> resources/folder_example/{images/,mos.csv}
    python scripts/make_folder_example.py --out DIR

It lays out generated images the way a user's folder looks: photos in subfolders, a MOS CSV
(``image,mos``, paths relative to the folder) covering only some of them, the rest unlabelled.
The images are the demo's (scikit-image's bundled photos with graded blur, noise, JPEG and
pixelation) and THE MOS IS SYNTHETIC (100 x SSIM to the undistorted photo), as in the demo.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leaf_steps.make_demo_dataset import build_demo_dataset  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "grass", "gravel", "brick", "moon"]
LABELLED_EVERY = 3  # two of every three images get a MOS; the others are unlabelled


def make_example(out: Path) -> tuple[int, int]:
    """(images written, labelled) under ``out``; an existing example there is replaced."""
    settings = {
        "split_seed": 0,
        "test_fraction": 0.2,
        "demo": {
            "references": PHOTOS,
            "distortions": ["gaussian_blur", "gaussian_noise", "jpeg", "pixelate"],
            "levels": 2,
            "size": 96,
            "tiles": 1,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_demo_dataset(settings, Path(tmp) / "images", Path(tmp) / "refs", Path(tmp) / "m.parquet")
        images = out / "images"
        shutil.rmtree(images, ignore_errors=True)
        rows = []
        for i, row in enumerate(manifest.sort("image_id").iter_rows(named=True)):
            rel = f"{row['photo']}/{Path(row['path']).name}"
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(row["path"], images / rel)
            if i % LABELLED_EVERY:
                rows.append((rel, f"{row['mos']:.2f}"))
    with open(out / "mos.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mos"])
        writer.writerows(rows)
    return manifest.height, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "resources/folder_example")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    n, labelled = make_example(a.out)
    print(f"{a.out}/images: {n} images, {labelled} of them in {a.out}/mos.csv (synthetic MOS)")


if __name__ == "__main__":
    main()
