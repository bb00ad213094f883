"""The photographs scikit-image ships inside its wheel: the demo's contents, and the NIQE stand-in's
default pristine set outside the demo (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import skimage

SKIMAGE_DATA_DIR = Path(skimage.__file__).parent / "data"

# Photographs (and photo-like micrographs) that scikit-image ships inside its wheel;
# synthetic drawings (logo, chessboard, horse silhouette, phantom) are left out on purpose.
BUNDLED_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "moon": "moon.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}

# Undistorted natural scenes among them: NIQE's pristine model (Mittal et al. 2012) is fitted on
# such photos. Text pages, cells and micrographs are left out.
PRISTINE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "moon",
    "motorcycle_left",
    "motorcycle_right",
    "rocket",
)


def photo_path(name: str) -> Path:
    return SKIMAGE_DATA_DIR / BUNDLED_PHOTOS[name]
