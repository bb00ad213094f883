"""Build the embedded CPU demo dataset from scikit-image's bundled sample photos.

Each reference photo (a file shipped inside ``skimage/data/``; nothing is downloaded)
is centre-cropped to a square and resized to ``size x size`` (Lanczos), grey photos
are replicated to RGB. Every reference is then degraded by each distortion at
``levels`` graded severities (level 1 = mildest, level ``levels`` = worst; the
parameters are interpolated between the ranges in :data:`DISTORTIONS`). Noise is
seeded from (``demo.noise_seed``, reference, level), so the same settings give the same
pixels, whatever the split.

Outputs: pristine references as ``<reference>.png`` in ``--references-dir`` (the NIQE
stand-in teacher is fitted on these, never on MOS); every pristine and distorted image
as a lossless PNG in ``--images-dir`` (the JPEG distortion round-trips through an
in-memory JPEG and is stored decoded); the split-free image list (``--out-image-list``:
image_id, path, sha256 of the PNG's bytes, width, height: what teacher scoring reads) and
the labels (``--out-labels``: image_id, mos, ``photo``, ``reference`` (the photo, or one of
its ``tiles x tiles`` crops when ``demo.tiles > 1``), ``distortion`` ("pristine" for the
undistorted photo) and ``level`` (0 for the pristine photo)). ``leaf_steps.split_demo_dataset``
adds the split and writes the manifest, so a new split reruns no teacher scoring. With
``--out`` instead, the step writes the manifest itself (images, labels and split in one go).

THE MOS IS SYNTHETIC. It is no human opinion score but the full-reference fidelity of
each image to its own pristine photo::

    mos = 100 * clip(SSIM(image, reference), 0, 1)

with SSIM from ``skimage.metrics.structural_similarity`` (Wang et al. 2004 settings:
11x11 Gaussian window, sigma 1.5, population covariances, data_range 255), computed
per RGB channel and averaged. The pristine photo scores exactly 100. Because the
severity grows with the level, the pseudo-MOS decreases with the level for every
distortion; across distortions and photos it is only as "perceptual" as SSIM is.

Split: by reference photo (:mod:`leaf_steps.datasets.demo`), so all versions of one photo
share a split and no content leaks between train and test (validation subsets are carved out
downstream).
A distortion that cannot change a photo (``saturation`` on a grey photo) is skipped
for that photo and listed under ``skipped`` in the provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import skimage
from PIL import Image, ImageOps
from scipy import ndimage
from skimage.metrics import structural_similarity

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import atomic_write_bytes, make_provenance, stable_hash, write_parquet
from leaf_steps.datasets.demo import demo_manifest, resolve_split, split_references  # noqa: F401 (re-exported)
from leaf_steps.images.bundled import BUNDLED_PHOTOS, SKIMAGE_DATA_DIR

log = logging.getLogger("leaf.make_demo_dataset")

DEFAULT_DEMO: dict[str, Any] = {
    "references": [
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "motorcycle_left",
        "hubble_deep_field",
        "camera",
        "moon",
        "coins",
        "grass",
        "gravel",
        "brick",
        "retina",
        "ihc",
    ],
    "distortions": ["gaussian_blur", "gaussian_noise", "jpeg", "contrast"],
    "levels": 4,
    "size": 160,
    "tiles": 1,
    "noise_seed": 0,
}
PRISTINE = "pristine"
SSIM_SETTINGS: dict[str, Any] = {
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": 255,
    "channel_axis": -1,
}


@dataclass(frozen=True)
class Distortion:
    """A degradation whose parameter runs from ``mild`` (level 1) to ``severe`` (top level)."""

    mild: float
    severe: float
    spacing: str  # "geometric" for multiplicative parameters (sigma, quality, factor), else "linear"
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

    def parameter(self, level: int, levels: int) -> float:
        t = 0.5 if levels == 1 else (level - 1) / (levels - 1)
        if self.spacing == "geometric":
            return float(math.exp(math.log(self.mild) + t * (math.log(self.severe) - math.log(self.mild))))
        return float(self.mild + t * (self.severe - self.mild))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (the weights PIL's convert("L") and MATLAB's rgb2gray use)."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _gaussian_blur(img: np.ndarray, sigma: float, _rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(ndimage.gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect"))


def _gaussian_noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(img.astype(np.float64) + rng.normal(0.0, std, size=img.shape))


def _jpeg(img: np.ndarray, quality: float, _rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(round(quality)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _contrast(img: np.ndarray, keep: float, _rng: np.random.Generator) -> np.ndarray:
    # Shrink deviations from the image mean: the mean brightness stays, the contrast goes.
    x = img.astype(np.float64)
    return _to_uint8(x.mean() + keep * (x - x.mean()))


def _pixelate(img: np.ndarray, factor: float, _rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


def _saturation(img: np.ndarray, keep: float, _rng: np.random.Generator) -> np.ndarray:
    # Blend towards the photo's own grey version: keep=1 leaves it, keep=0 is fully desaturated.
    x = img.astype(np.float64)
    grey = _luma(img)[..., None]
    return _to_uint8(grey + keep * (x - grey))


DISTORTIONS: dict[str, Distortion] = {
    "gaussian_blur": Distortion(mild=0.8, severe=4.0, spacing="geometric", apply=_gaussian_blur),  # sigma, px
    "gaussian_noise": Distortion(mild=6.0, severe=50.0, spacing="geometric", apply=_gaussian_noise),  # std, 0..255
    "jpeg": Distortion(mild=40.0, severe=4.0, spacing="geometric", apply=_jpeg),  # JPEG quality
    "contrast": Distortion(mild=0.6, severe=0.1, spacing="geometric", apply=_contrast),  # contrast kept
    "pixelate": Distortion(mild=2.0, severe=10.0, spacing="geometric", apply=_pixelate),  # block size, px
    "saturation": Distortion(mild=0.75, severe=0.0, spacing="linear", apply=_saturation),  # chroma kept
}


def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The dataset block with defaults filled in; a bad value raises ConfigError naming its key."""
    if not isinstance(settings, dict):
        raise ConfigError(f"dataset: settings must be a mapping, got {type(settings).__name__}")
    if settings.get("name", "demo") != "demo":
        raise ConfigError(f"dataset.name: make_demo_dataset builds the 'demo' dataset, got {settings['name']!r}")
    demo = settings.get("demo") or {}
    if not isinstance(demo, dict):
        raise ConfigError("dataset.demo: must be a mapping")
    unknown = sorted(set(demo) - set(DEFAULT_DEMO))
    if unknown:
        raise ConfigError(f"dataset.demo.{unknown[0]}: unknown key; known keys are {sorted(DEFAULT_DEMO)}")
    demo = {**DEFAULT_DEMO, **demo}
    refs = list(demo["references"])
    bad = [r for r in refs if r not in BUNDLED_PHOTOS]
    if bad:
        raise ConfigError(
            f"dataset.demo.references: unknown reference(s) {bad}; choose from the photos bundled "
            f"with scikit-image: {sorted(BUNDLED_PHOTOS)}"
        )
    if len(set(refs)) != len(refs) or len(refs) < 2:
        raise ConfigError(f"dataset.demo.references: need at least 2 distinct references, got {refs}")
    dists = list(demo["distortions"])
    bad = [d for d in dists if d not in DISTORTIONS]
    if bad or not dists or len(set(dists)) != len(dists):
        raise ConfigError(f"dataset.demo.distortions: {dists} must be distinct names from {sorted(DISTORTIONS)}")
    levels, size, tiles = demo["levels"], demo["size"], demo["tiles"]
    if not isinstance(tiles, int) or isinstance(tiles, bool) or not 1 <= tiles <= 4:
        raise ConfigError(f"dataset.demo.tiles: must be an integer in 1..4, got {tiles!r}")
    if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= 8:
        raise ConfigError(f"dataset.demo.levels: must be an integer in 1..8, got {levels!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ConfigError(f"dataset.demo.size: must be an integer >= 32, got {size!r}")
    noise_seed = demo["noise_seed"]
    if not isinstance(noise_seed, int) or isinstance(noise_seed, bool) or noise_seed < 0:
        raise ConfigError(f"dataset.demo.noise_seed: must be a non-negative integer, got {noise_seed!r}")
    return {
        **resolve_split(settings),
        "demo": {
            "references": refs,
            "distortions": dists,
            "levels": levels,
            "size": size,
            "tiles": tiles,
            "noise_seed": noise_seed,
        },
    }


def load_reference(name: str, size: int) -> np.ndarray:
    """A bundled photo as a ``size x size`` RGB uint8 array (centre crop, Lanczos resize)."""
    path = SKIMAGE_DATA_DIR / BUNDLED_PHOTOS[name]
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            return np.asarray(ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS))
    except OSError as exc:
        raise InputError(f"{path}: cannot read scikit-image sample photo {name!r} ({exc})") from exc


def reference_tiles(name: str, size: int, tiles: int) -> list[tuple[str, np.ndarray]]:
    """The photo as ``tiles x tiles`` non-overlapping ``size x size`` references (one if tiles == 1).

    Tiles multiply the number of distinct contents a small student sees, which is what lets it
    learn quality rather than memorise a dozen photos; all tiles of one photo share its split.
    """
    if tiles == 1:
        return [(name, load_reference(name, size))]
    big = load_reference(name, size * tiles)
    return [
        (f"{name}-{r}{c}", np.ascontiguousarray(big[r * size : (r + 1) * size, c * size : (c + 1) * size]))
        for r in range(tiles)
        for c in range(tiles)
    ]


def is_grey(img: np.ndarray) -> bool:
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


def pseudo_mos(image: np.ndarray, reference: np.ndarray) -> float:
    """SYNTHETIC MOS on 0..100: 100 * clip(SSIM(image, reference), 0, 1) (see module docstring)."""
    ssim = structural_similarity(reference, image, **SSIM_SETTINGS)
    return float(100.0 * min(max(ssim, 0.0), 1.0))


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _noise_rng(seed: int, reference: str, distortion: str, level: int) -> np.random.Generator:
    return np.random.default_rng(int(stable_hash([seed, reference, distortion, level]), 16))


def build_demo_images(
    settings: dict[str, Any], images_dir: Path, references_dir: Path
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Write the references and images; (image list, labels, provenance values), none of it split-dependent."""
    s = resolve_settings(settings)
    demo = s["demo"]
    images_dir, references_dir = Path(images_dir), Path(references_dir)
    images: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    skipped: list[str] = []
    parameters = {
        d: [DISTORTIONS[d].parameter(k, demo["levels"]) for k in range(1, demo["levels"] + 1)]
        for d in demo["distortions"]
    }
    tiles = [
        (photo, name, img)
        for photo in demo["references"]
        for name, img in reference_tiles(photo, demo["size"], demo["tiles"])
    ]
    for photo, ref_name, ref in tiles:
        png = _png_bytes(ref)
        atomic_write_bytes(references_dir / f"{ref_name}.png", png)
        atomic_write_bytes(images_dir / f"{ref_name}.png", png)
        versions = [(ref_name, PRISTINE, 0, ref, png)]
        for dist_name in demo["distortions"]:
            if dist_name == "saturation" and is_grey(ref):
                skipped.append(f"{ref_name}/{dist_name}")
                continue
            for level, param in enumerate(parameters[dist_name], start=1):
                rng = _noise_rng(demo["noise_seed"], ref_name, dist_name, level)
                img = DISTORTIONS[dist_name].apply(ref, param, rng)
                image_id = f"{ref_name}__{dist_name}__{level}"
                data = _png_bytes(img)
                atomic_write_bytes(images_dir / f"{image_id}.png", data)
                versions.append((image_id, dist_name, level, img, data))
        for image_id, dist_name, level, img, data in versions:
            images.append(
                {
                    "image_id": image_id,
                    "path": str(images_dir / f"{image_id}.png"),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "width": img.shape[1],
                    "height": img.shape[0],
                }
            )
            labels.append(
                {
                    "image_id": image_id,
                    "mos": pseudo_mos(img, ref),
                    "photo": photo,
                    "reference": ref_name,
                    "distortion": dist_name,
                    "level": level,
                }
            )
    image_list = pl.DataFrame(
        images,
        schema={"image_id": pl.String, "path": pl.String, "sha256": pl.String, "width": pl.Int32, "height": pl.Int32},
    )
    label_table = pl.DataFrame(
        labels,
        schema={
            "image_id": pl.String,
            "mos": pl.Float64,
            "photo": pl.String,
            "reference": pl.String,
            "distortion": pl.String,
            "level": pl.Int32,
        },
    )
    facts = dict(
        dataset="demo",
        settings={"demo": demo},
        mos_is_synthetic=True,
        fr_metric={
            "name": "skimage.metrics.structural_similarity",
            "version": skimage.__version__,
            "params": SSIM_SETTINGS,
            "mos_formula": "100 * clip(ssim(image, reference), 0, 1)",
        },
        distortion_parameters=parameters,
        skipped=skipped,
        references={name: f"skimage/data/{BUNDLED_PHOTOS[name]}" for name in demo["references"]},
    )
    log.info(
        "demo dataset: %d images (%d photos; %d references) in %s; MOS is SYNTHETIC (SSIM-based)",
        image_list.height,
        len(demo["references"]),
        len(tiles),
        images_dir,
    )
    return image_list, label_table, facts


def write_demo_manifest(
    image_list: pl.DataFrame, labels: pl.DataFrame, split: dict[str, Any], out: Path, facts: dict[str, Any]
) -> pl.DataFrame:
    """The manifest: the images with their labels and the split by photo (:mod:`leaf_steps.datasets.demo`)."""
    split = resolve_split(split)
    manifest, splits = demo_manifest(image_list, labels, split["split_seed"], split["test_fraction"])
    write_parquet(
        manifest,
        out,
        make_provenance(
            "make_demo_dataset",
            **facts,
            split=split,
            split_references={part: sorted(n for n, sp in splits.items() if sp == part) for part in ("train", "test")},
        ),
    )
    log.info(
        "demo manifest: %d images, %d of %d photos in test -> %s",
        manifest.height,
        sum(v == "test" for v in splits.values()),
        len(splits),
        out,
    )
    return manifest


def build_demo_dataset(settings: dict[str, Any], images_dir: Path, references_dir: Path, out: Path) -> pl.DataFrame:
    """Images, labels and split in one go: the manifest at ``out`` (scripts and tests; the workflow splits apart)."""
    image_list, labels, facts = build_demo_images(settings, images_dir, references_dir)
    return write_demo_manifest(image_list, labels, settings, Path(out), facts)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", type=json_arg, required=True, help="the config's dataset block as JSON")
    ap.add_argument("--images-dir", type=Path, required=True)
    ap.add_argument("--references-dir", type=Path, required=True)
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="the manifest (images, labels and split)")
    out.add_argument("--out-image-list", type=Path, help="the split-free image list (needs --out-labels)")
    ap.add_argument("--out-labels", type=Path, help="the synthetic labels (image_id, mos, photo, ...)")
    a = ap.parse_args(argv)
    if a.out is not None:
        build_demo_dataset(a.settings, a.images_dir, a.references_dir, a.out)
        return
    if a.out_labels is None:
        raise ConfigError("--out-image-list needs --out-labels")
    image_list, labels, facts = build_demo_images(a.settings, a.images_dir, a.references_dir)
    write_parquet(
        image_list,
        a.out_image_list,
        make_provenance(
            "list_images", **facts, n_images=image_list.height, distinct_contents=image_list["sha256"].n_unique()
        ),
    )
    write_parquet(labels, a.out_labels, make_provenance("make_demo_dataset", **facts))


if __name__ == "__main__":
    run_step(main)
