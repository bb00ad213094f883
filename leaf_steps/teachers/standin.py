"""NIQE teacher: a classical, label-free NR-IQA stand-in for the MLLM (CPU only).

It answers the teacher's two questions from the NIQE distance (:mod:`leaf_steps.teachers.niqe_model`,
lower = better) of each image to a pristine model fitted on the reference photos
only; no MOS is read anywhere.

Point (five level log-likelihoods). NIQE is placed on a quality axis measured in
levels, anchored at the pristine photos::

    q = 5 - (niqe - anchor) / level_scale
    l_k = log_softmax_k( -(q - v_k)^2 / 2 ),   v = (5, 4, 3, 2, 1) for Excellent..Bad

i.e. a unit-width Gaussian around each level centre, so a typical pristine photo
(``niqe == anchor``) puts most mass on Excellent and every ``level_scale`` NIQE units
above it moves the peak one level down. ``anchor`` is the median of the pristine
anchor scores stored by ``leaf_steps.fit_niqe`` (leave-one-out NIQE of each reference
photo). ``level_scale`` defaults to the robust spread of those anchors
(``scipy.stats.median_abs_deviation(scale="normal")``): one level is the NIQE
difference that separates typical pristine photos from one another, the finest
difference NIQE can be trusted to resolve. The expected score (Eq 2) is strictly
decreasing in NIQE, so rankings are preserved.

Pair: ``(l_A, l_B) = log_softmax((-niqe_A, -niqe_B) / pair_temperature)``;
``pair_temperature`` defaults to ``level_scale`` (one level apart -> p = 0.73).

Spec keys (``teachers.<name>``): backend ("niqe"), model_path (the .npz; the Snakemake
rule injects it), pristine_dir (the folder of pristine photos the rule fits the model on;
default: the demo references), patch_size and sharpness_threshold (used by ``fit_niqe``;
must match the fitted model), level_scale, pair_temperature; and ``gpus`` (read by the
cluster profile for every teacher; NIQE needs none).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax
from scipy.stats import median_abs_deviation

from leaf_steps.core.errors import ConfigError, InputError, TeacherError
from leaf_steps.teachers.base import ImageRef, Teacher
from leaf_steps.teachers.niqe_model import NiqeModel, load_model, patch_features, read_luminance, score_features
from leaf_steps.teachers.teacher_math import LEVEL_VALUES, LEVELS, PAIR_LABELS, LabelScores

SPEC_KEYS = (
    "backend",
    "name",
    "gpus",
    "model_path",
    "pristine_dir",
    "patch_size",
    "sharpness_threshold",
    "level_scale",
    "pair_temperature",
)
DESCRIPTION = (
    "classical NR-IQA stand-in for the MLLM: NIQE (Mittal et al. 2012) fitted on pristine reference "
    "photos only; label-free, never sees MOS; prompts are ignored"
)
CACHE_SIZE = 4096


def _number(spec: dict[str, Any], key: str, where: str, *, integer: bool = False) -> float | int | None:
    value = spec.get(key)
    if value is None:
        return None
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not value > 0 or not math.isfinite(value):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{where}.{key}: must be {kind}, got {value!r}")
    return value


def validate_spec(spec: dict[str, Any], where: str = "teachers.<name>") -> dict[str, Any]:
    """Check the niqe teacher keys; unknown or bad values raise ConfigError naming ``<where>.<key>``."""
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key for the niqe backend; known keys are {list(SPEC_KEYS)}")
    if spec.get("backend", "niqe") != "niqe":
        raise ConfigError(f"{where}.backend: expected 'niqe', got {spec['backend']!r}")
    patch = _number(spec, "patch_size", where, integer=True)
    if patch is not None and (patch < 8 or patch % 2):
        raise ConfigError(f"{where}.patch_size: must be an even integer >= 8, got {patch}")
    threshold = _number(spec, "sharpness_threshold", where)
    if threshold is not None and threshold > 1:
        raise ConfigError(f"{where}.sharpness_threshold: must be in (0, 1], got {threshold}")
    _number(spec, "level_scale", where)
    _number(spec, "pair_temperature", where)
    return spec


def anchor_and_scale(model: NiqeModel) -> tuple[float, float | None]:
    """Median pristine anchor NIQE and its robust spread (None where undefined)."""
    anchors = np.asarray(model.anchor_scores, dtype=np.float64)
    anchors = anchors[np.isfinite(anchors)]
    if len(anchors) == 0:
        raise TeacherError("the NIQE model stores no finite pristine anchor scores; refit it with leaf_steps.fit_niqe")
    spread = float(median_abs_deviation(anchors, scale="normal")) if len(anchors) >= 2 else 0.0
    return float(np.median(anchors)), (spread if spread > 0 else None)


def level_logliks(niqe: float, anchor: float, level_scale: float) -> list[float]:
    """Five normalised level log-likelihoods (Excellent..Bad) for one NIQE value (module docstring)."""
    q = 5.0 - (niqe - anchor) / level_scale
    return log_softmax(-0.5 * (q - np.asarray(LEVEL_VALUES)) ** 2).tolist()


def pair_logliks(niqe_a: float, niqe_b: float, temperature: float) -> list[float]:
    """(l_A, l_B) = log-softmax of (-niqe_A, -niqe_B) / temperature."""
    return log_softmax(-np.array([niqe_a, niqe_b]) / temperature).tolist()


def fitted_model_hash(model: NiqeModel) -> str:
    """sha256 of what NIQE scoring reads from a fitted model: the pristine MVG and the patch settings."""
    digest = hashlib.sha256()
    for array in (model.mean, model.cov):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    digest.update(f"|{model.patch_size}|{model.sharpness_threshold!r}".encode())
    return digest.hexdigest()


class NiqeTeacher(Teacher):
    backend = "niqe"
    reads_prompts = False  # its answers depend on the pixels and the fitted model only

    def __init__(self, spec: dict[str, Any], prompts: dict[str, str]):
        super().__init__(validate_spec(dict(spec), f"teachers.{spec.get('name') or '<name>'}"), prompts)
        if not self.spec.get("model_path"):
            raise ConfigError(
                "teachers.<name>.model_path: required for the niqe backend (the .npz written by "
                "leaf_steps.fit_niqe; the Snakemake rule injects it)"
            )
        self.model_path = Path(self.spec["model_path"])
        try:
            self.model = load_model(self.model_path)
        except InputError as exc:
            raise TeacherError(str(exc)) from exc
        for key in ("patch_size", "sharpness_threshold"):
            wanted, fitted = self.spec.get(key), getattr(self.model, key)
            if wanted is not None and not math.isclose(wanted, fitted):
                raise ConfigError(
                    f"teachers.<name>.{key}: {wanted} but {self.model_path} was fitted with {fitted}; "
                    "rerun leaf_steps.fit_niqe with this setting"
                )
        self.anchor, derived = anchor_and_scale(self.model)
        if self.spec.get("level_scale") is not None:
            self.level_scale, self.level_scale_source = float(self.spec["level_scale"]), "spec"
        elif derived is not None:
            self.level_scale, self.level_scale_source = derived, "MAD of the pristine anchor NIQE scores"
        else:
            raise ConfigError(
                f"teachers.<name>.level_scale: cannot be derived from {self.model_path} (fewer than "
                "two distinct pristine anchors); set it explicitly"
            )
        self.pair_temperature = float(self.spec.get("pair_temperature") or self.level_scale)
        self._cache: OrderedDict[str, float] = OrderedDict()

    def niqe(self, path: str) -> float:
        """NIQE of one image file (cached); InputError naming the file if unreadable or undefined."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            features, _ = patch_features(read_luminance(path), self.model.patch_size)
        except ValueError as exc:  # e.g. smaller than one patch
            raise InputError(f"{path}: {exc}") from exc
        value = score_features(features, self.model)
        if not math.isfinite(value):
            raise InputError(f"{path}: NIQE is undefined (fewer than two patches with non-flat statistics)")
        self._cache[path] = value
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return value

    def answer_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        out = []
        for ref in images:
            try:
                value = self.niqe(ref.path)
            except InputError as exc:
                out.append(LabelScores.failed(LEVELS, f"{ref.image_id}: {exc}"))
                continue
            out.append(
                LabelScores(
                    logliks=level_logliks(value, self.anchor, self.level_scale),
                    mass=1.0,
                    missing=[],
                    image_bytes=["pixels"],
                )
            )
        return out

    def answer_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        out = []
        for a, b in pairs:
            try:
                na, nb = self.niqe(a.path), self.niqe(b.path)
            except InputError as exc:
                out.append(LabelScores.failed(PAIR_LABELS, f"{a.image_id} vs {b.image_id}: {exc}"))
                continue
            out.append(
                LabelScores(
                    logliks=pair_logliks(na, nb, self.pair_temperature),
                    mass=1.0,
                    missing=[],
                    image_bytes=["pixels", "pixels"],
                )
            )
        return out

    def score_settings(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            # The fitted arrays scoring reads, not the .npz bytes (its zip container may differ for one fit).
            "fitted_model_sha256": fitted_model_hash(self.model),
            "patch_size": self.model.patch_size,
            "sharpness_threshold": self.model.sharpness_threshold,
            "anchor_niqe": self.anchor,
            "level_scale": self.level_scale,
            "pair_temperature": self.pair_temperature,
        }

    def operational_settings(self) -> dict[str, Any]:
        return {}

    def facts(self) -> dict[str, Any]:
        return {
            "description": DESCRIPTION,
            "label_free": True,
            "model_path": str(self.model_path),
            "pristine_images": self.model.n_images,
            "pristine_patches": self.model.n_patches,
            "anchor_method": self.model.anchor_method,
            "level_scale_source": self.level_scale_source,
            "point_mapping": "l_k = log_softmax(-(q - v_k)^2 / 2), q = 5 - (niqe - anchor_niqe) / level_scale",
            "pair_mapping": "(l_A, l_B) = log_softmax((-niqe_A, -niqe_B) / pair_temperature)",
        }

    def close(self) -> None:
        self._cache.clear()
