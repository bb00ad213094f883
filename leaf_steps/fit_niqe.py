"""Fit the pristine NIQE model for the stand-in teacher on the reference photos only.

Reads every image in ``--references-dir`` (the pristine photos; never a manifest, never
MOS), fits the NIQE multivariate Gaussian (:func:`leaf_steps.teachers.niqe_model.fit_pristine_model`)
and writes it atomically as ``.npz``. It also stores one *anchor* NIQE score per
reference photo, which the teacher uses to place NIQE on its quality-level axis:
each photo is scored by a model fitted on all the *other* photos (leave-one-out), so
an anchor says how a pristine photo the model has not seen scores; in-sample scores
would be optimistically low. With fewer than three photos (or when leaving one out
leaves too few patches) the anchors are in-sample, and the .npz says so.

``--settings`` is the teacher's config block (``teachers.<name>``): ``patch_size``
(default 96, as in the paper) and ``sharpness_threshold`` (default 0.75) are used;
the teacher-only keys are checked and otherwise ignored.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import InputError
from leaf_steps.images.bundled import PRISTINE_PHOTOS, photo_path
from leaf_steps.teachers.niqe_model import (
    DEFAULT_PATCH_SIZE,
    DEFAULT_SHARPNESS_THRESHOLD,
    NiqeModel,
    model_from_features,
    patch_features,
    read_luminance,
    save_model,
    score_features,
    sharp_patches,
)
from leaf_steps.teachers.standin import validate_spec

log = logging.getLogger("leaf.fit_niqe")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def reference_images(references_dir: Path) -> list[Path]:
    if not references_dir.is_dir():
        raise InputError(f"{references_dir}: references folder not found")
    paths = sorted(
        p for p in references_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not paths:
        raise InputError(f"{references_dir}: no reference images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


def fit_with_anchors(
    images: Sequence[np.ndarray], names: Sequence[str], patch_size: int, sharpness_threshold: float
) -> NiqeModel:
    """The pristine model over all ``images`` plus per-image anchor scores (leave-one-out when possible)."""
    per_image = [patch_features(img, patch_size) for img in images]
    selected = [sharp_patches(feats, sharpness, sharpness_threshold) for feats, sharpness in per_image]
    model = model_from_features(selected, patch_size, sharpness_threshold)
    method = "leave-one-out" if len(images) >= 3 else "in-sample"
    if method == "leave-one-out":
        try:
            anchors = [
                score_features(
                    feats, model_from_features(selected[:i] + selected[i + 1 :], patch_size, sharpness_threshold)
                )
                for i, (feats, _) in enumerate(per_image)
            ]
        except ValueError as exc:  # leaving one photo out left fewer than two usable patches
            log.warning("anchors are in-sample NIQE scores (%s)", exc)
            method = "in-sample"
    if method == "in-sample":
        anchors = [score_features(feats, model) for feats, _ in per_image]
    model.anchor_scores = np.asarray(anchors, dtype=np.float64)
    model.anchor_names = tuple(names)
    model.anchor_method = method
    return model


def bundled_references() -> list[Path]:
    """The default pristine set outside the demo: scikit-image's bundled natural photos (PRISTINE_PHOTOS)."""
    return [photo_path(name) for name in PRISTINE_PHOTOS]


def fit_niqe(references_dir: Path | None, settings: dict[str, Any], out: Path) -> NiqeModel:
    """Fit on the photos in ``references_dir``, or on the bundled pristine photos when it is None."""
    settings = validate_spec(dict(settings))
    patch_size = int(settings.get("patch_size") or DEFAULT_PATCH_SIZE)
    threshold = float(settings.get("sharpness_threshold") or DEFAULT_SHARPNESS_THRESHOLD)
    paths = reference_images(Path(references_dir)) if references_dir is not None else bundled_references()
    references_dir = references_dir or paths[0].parent
    images = [read_luminance(p) for p in paths]
    for path, img in zip(paths, images, strict=True):
        if min(img.shape) < patch_size:
            raise InputError(
                f"{path}: {img.shape[1]}x{img.shape[0]} pixels is smaller than one "
                f"{patch_size}x{patch_size} NIQE patch (teachers.<name>.patch_size)"
            )
    try:
        model = fit_with_anchors(images, [p.stem for p in paths], patch_size, threshold)
    except ValueError as exc:
        raise InputError(f"{references_dir}: cannot fit the NIQE model ({exc})") from exc
    finite = model.anchor_scores[np.isfinite(model.anchor_scores)]
    if len(finite) == 0:
        raise InputError(f"{references_dir}: no reference photo has a defined NIQE score (all flat?)")
    save_model(model, out)
    log.info(
        "%d photos, %d pristine patches of %d px; %s anchor NIQE median %.3f (range %.3f..%.3f) -> %s",
        model.n_images,
        model.n_patches,
        patch_size,
        model.anchor_method,
        np.median(finite),
        finite.min(),
        finite.max(),
        out,
    )
    return model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    refs = ap.add_mutually_exclusive_group(required=True)
    refs.add_argument("--references-dir", type=Path, help="folder of pristine reference photos")
    refs.add_argument(
        "--bundled-photos",
        action="store_true",
        help="fit on scikit-image's bundled natural photos (the default outside the demo)",
    )
    ap.add_argument("--settings", type=json_arg, default={}, help="the teacher's config block as JSON")
    ap.add_argument("--out", type=Path, required=True, help="model .npz")
    a = ap.parse_args(argv)
    fit_niqe(a.references_dir, a.settings, a.out)


if __name__ == "__main__":
    run_step(main)
