"""NIQE, the "completely blind" natural image quality evaluator, in numpy/scipy.

Mittal, Soundararajan & Bovik (2012), "Making a 'completely blind' image quality
analyzer", IEEE Signal Processing Letters 20(3). Label-free: the model is a
multivariate Gaussian (MVG) of natural-scene statistics fitted on pristine photos
only; an image's quality is its statistical distance from that model (lower = better).
This follows the authors' MATLAB release step by step:

1. luminance in 0..255 (BT.601 weights, as MATLAB's ``rgb2gray`` and PIL's ``convert("L")``);
   the image is cropped to a whole number of P x P patches;
2. MSCN coefficients ``(I - mu) / (sigma + 1)``, with mu and sigma the local mean and
   standard deviation under a 7x7 Gaussian window (std 7/6, replicated borders);
3. per patch, 18 features (the release's ``computefeature.m``): an asymmetric generalised
   Gaussian (AGGD) fit of the MSCN coefficients (shape, mean of the left/right scales),
   and AGGD fits of the products of horizontally, vertically and both diagonally adjacent
   coefficients (shape, mean, left scale, right scale; the neighbour wraps around inside
   the patch like MATLAB's ``circshift``). Shapes are moment-matched on the grid
   0.2:0.001:10. The same 18 again on the image halved by anti-aliased bicubic resizing
   with P/2 patches -> 36 features per patch;
4. pristine model: from every pristine photo keep the patches whose mean local sigma
   exceeds ``sharpness_threshold`` (0.75) x that photo's sharpest patch, and fit the
   MVG (mean, covariance) over all kept patches;
5. score of a test image: fit the MVG over *all* its patches (like MATLAB's nanmean and
   nancov: undefined features of flat patches are skipped in the mean, incomplete rows in
   the covariance) and return
   ``sqrt((mu_p - mu_t)^T pinv((S_p + S_t) / 2) (mu_p - mu_t))``.

The paper uses P = 96 on photos of a few hundred pixels; the 160-pixel demo images use
P = 32 so that a photo still yields 25 patches.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import gammaln

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_bytes
from leaf_steps.images import load_rgb

DEFAULT_PATCH_SIZE = 96
DEFAULT_SHARPNESS_THRESHOLD = 0.75
N_FEATURES = 36  # 18 per scale x 2 scales

# Moment-matching tables on the authors' shape grid 0.2:0.001:10.
_SHAPES = np.round(np.arange(200, 10001) * 1e-3, 3)
# E[|x|]^2 / E[x^2] = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) of a GGD, strictly increasing in a.
_AGGD_RATIO = np.exp(2 * gammaln(2 / _SHAPES) - gammaln(1 / _SHAPES) - gammaln(3 / _SHAPES))
_NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (row, col), circshift offsets of the release


@dataclass
class NiqeModel:
    """The pristine MVG and how it was fitted; ``anchor_*`` are optional reference NIQE scores."""

    mean: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    patch_size: int
    sharpness_threshold: float
    n_patches: int
    n_images: int
    anchor_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    anchor_names: tuple[str, ...] = ()
    anchor_method: str = ""  # "leave-one-out" or "in-sample" (see leaf_steps.fit_niqe)


def _nearest_shape(ratios: np.ndarray, shapes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Shape whose moment ratio is nearest to each target (``ratios`` increasing); NaN stays NaN."""
    t = np.asarray(targets, dtype=np.float64)
    idx = np.clip(np.searchsorted(ratios, np.nan_to_num(t, nan=0.0)), 1, len(ratios) - 1)
    left_closer = np.abs(t - ratios[idx - 1]) <= np.abs(ratios[idx] - t)
    shape = shapes[np.where(left_closer, idx - 1, idx)]
    return np.where(np.isfinite(t), shape, np.nan)


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric GGD moment fit of each row of ``x``: (shape, left scale, right scale).

    NaN where a side is empty (e.g. a perfectly flat patch)."""
    sq = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt(np.sum(sq * neg, axis=-1) / np.sum(neg, axis=-1))
        right_std = np.sqrt(np.sum(sq * pos, axis=-1) / np.sum(pos, axis=-1))
        g = left_std / right_std
        r_hat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        r_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shape = _nearest_shape(_AGGD_RATIO, _SHAPES, r_norm)
    to_scale = np.exp(0.5 * (gammaln(1 / shape) - gammaln(3 / shape)))  # std -> GGD scale; NaN stays NaN
    return shape, left_std * to_scale, right_std * to_scale


def mscn(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local sigma map."""
    kw = {"sigma": 7 / 6, "radius": 3, "mode": "nearest"}  # MATLAB fspecial('gaussian', 7, 7/6), 'replicate'
    mu = ndimage.gaussian_filter(image, **kw)
    sigma = np.sqrt(np.abs(ndimage.gaussian_filter(image * image, **kw) - mu * mu))
    return (image - mu) / (sigma + 1.0), sigma


def _patches(x: np.ndarray, p: int) -> np.ndarray:
    """(H, W) with H, W multiples of p -> (n_patches, p, p) in row-major patch order."""
    h, w = x.shape
    return x.reshape(h // p, p, w // p, p).swapaxes(1, 2).reshape(-1, p, p)


def _scale_features(coeffs: np.ndarray) -> np.ndarray:
    """18 features per patch from (n, p, p) MSCN patches (the release's computefeature.m)."""
    n = coeffs.shape[0]
    shape, left, right = fit_aggd(coeffs.reshape(n, -1))
    cols = [shape, (left + right) / 2]
    for shift in _NEIGHBOUR_SHIFTS:
        product = coeffs * np.roll(coeffs, shift, axis=(1, 2))
        shape, left, right = fit_aggd(product.reshape(n, -1))
        with np.errstate(invalid="ignore"):
            mean = (right - left) * np.exp(gammaln(2 / shape) - gammaln(1 / shape))
        cols.extend([shape, mean, left, right])
    return np.stack(cols, axis=1)


def to_luminance(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 3) or (H, W, 4) array with values in 0..255 -> float64 luminance."""
    x = np.asarray(image)
    if x.ndim == 3 and x.shape[2] in (3, 4) and x.dtype == np.uint8:
        # Same rounded luma as read_luminance (and MATLAB's rgb2gray on uint8), so arrays and files agree.
        x = np.asarray(Image.fromarray(np.ascontiguousarray(x[..., :3])).convert("L"))
    elif x.ndim == 3 and x.shape[2] in (3, 4):
        x = x[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif x.ndim != 2:
        raise ValueError(f"expected a grey (H, W) or colour (H, W, 3|4) image, got shape {x.shape}")
    return x.astype(np.float64)


def read_luminance(path: str | Path) -> np.ndarray:
    """Luminance (0..255, float64) of an image file; InputError naming the file if unreadable."""
    return np.asarray(load_rgb(path).convert("L"), dtype=np.float64)


def _halve(x: np.ndarray) -> np.ndarray:
    # Anti-aliased bicubic (a = -0.5), like MATLAB's imresize(im, 0.5).
    h, w = x.shape
    return np.asarray(
        Image.fromarray(x.astype(np.float32)).resize((w // 2, h // 2), Image.Resampling.BICUBIC), dtype=np.float64
    )


def patch_features(image: np.ndarray, patch_size: int = DEFAULT_PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(n_patches, 36) NIQE features and the (n_patches,) sharpness (mean local sigma) per patch."""
    if patch_size < 8 or patch_size % 2:
        raise ValueError(f"patch size must be an even number >= 8, got {patch_size}")
    lum = to_luminance(image)
    h, w = lum.shape
    rows, cols = h // patch_size, w // patch_size
    if rows == 0 or cols == 0:
        raise ValueError(f"image of {w}x{h} pixels is smaller than one {patch_size}x{patch_size} NIQE patch")
    lum = lum[: rows * patch_size, : cols * patch_size]
    features, sharpness = [], None
    for scale in (1, 2):
        coeffs, sigma = mscn(lum)
        features.append(_scale_features(_patches(coeffs, patch_size // scale)))
        if scale == 1:
            sharpness = _patches(sigma, patch_size).mean(axis=(1, 2))
            lum = _halve(lum)
    return np.concatenate(features, axis=1), sharpness


def pristine_features(
    image: np.ndarray, patch_size: int = DEFAULT_PATCH_SIZE, sharpness_threshold: float = DEFAULT_SHARPNESS_THRESHOLD
) -> np.ndarray:
    """Features of the patches of one pristine photo that are sharp enough to model."""
    return sharp_patches(*patch_features(image, patch_size), sharpness_threshold)


def sharp_patches(features: np.ndarray, sharpness: np.ndarray, sharpness_threshold: float) -> np.ndarray:
    """The rows of ``features`` whose patch sharpness exceeds the threshold x the sharpest patch."""
    return features[sharpness > sharpness_threshold * sharpness.max()]


def _mvg(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """nanmean / nancov (complete rows) as in the MATLAB release; NaNs where under-determined."""
    complete = features[np.isfinite(features).all(axis=1)]
    if len(complete) < 2:
        return np.full(N_FEATURES, np.nan), np.full((N_FEATURES, N_FEATURES), np.nan), len(complete)
    return np.nanmean(features, axis=0), np.cov(complete, rowvar=False), len(complete)


def model_from_features(features: Sequence[np.ndarray], patch_size: int, sharpness_threshold: float) -> NiqeModel:
    """The pristine MVG from per-image selected patch features (see :func:`pristine_features`)."""
    mean, cov, n = _mvg(np.concatenate(list(features), axis=0))
    if n < 2:
        raise ValueError(f"only {n} usable pristine patch(es); need more (or larger) pristine photos")
    return NiqeModel(
        mean=mean,
        cov=cov,
        patch_size=patch_size,
        sharpness_threshold=sharpness_threshold,
        n_patches=n,
        n_images=len(features),
    )


def fit_pristine_model(
    images: Iterable[np.ndarray],
    patch_size: int = DEFAULT_PATCH_SIZE,
    sharpness_threshold: float = DEFAULT_SHARPNESS_THRESHOLD,
) -> NiqeModel:
    """Fit the pristine NIQE model on (H, W[, 3]) photos with values in 0..255."""
    feats = [pristine_features(img, patch_size, sharpness_threshold) for img in images]
    if not feats:
        raise ValueError("no pristine images given")
    return model_from_features(feats, patch_size, sharpness_threshold)


def score_features(features: np.ndarray, model: NiqeModel) -> float:
    """NIQE distance of a test image's patch features from the pristine model (NaN if undefined)."""
    mean, cov, n = _mvg(features)
    if n < 2:
        return float("nan")
    d = model.mean - mean
    return float(np.sqrt(max(d @ np.linalg.pinv((model.cov + cov) / 2.0) @ d, 0.0)))


def niqe_score(image: np.ndarray, model: NiqeModel) -> float:
    """NIQE of one (H, W[, 3]) image with values in 0..255; lower is better, NaN if undefined
    (fewer than two patches with defined statistics, e.g. a flat image)."""
    return score_features(patch_features(image, model.patch_size)[0], model)


def save_model(model: NiqeModel, path: str | Path) -> None:
    """Write the model as .npz atomically (no pickles)."""
    buf = io.BytesIO()
    np.savez(
        buf,
        mean=model.mean,
        cov=model.cov,
        patch_size=model.patch_size,
        sharpness_threshold=model.sharpness_threshold,
        n_patches=model.n_patches,
        n_images=model.n_images,
        anchor_scores=np.asarray(model.anchor_scores, dtype=np.float64),
        anchor_names=np.asarray(model.anchor_names, dtype=np.str_),
        anchor_method=np.str_(model.anchor_method),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | Path) -> NiqeModel:
    """Read a model written by :func:`save_model`; InputError naming the file if it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: NIQE model file not found (run leaf_steps.fit_niqe first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            model = NiqeModel(
                mean=z["mean"].astype(np.float64),
                cov=z["cov"].astype(np.float64),
                patch_size=int(z["patch_size"]),
                sharpness_threshold=float(z["sharpness_threshold"]),
                n_patches=int(z["n_patches"]),
                n_images=int(z["n_images"]),
                anchor_scores=z["anchor_scores"].astype(np.float64),
                anchor_names=tuple(str(s) for s in z["anchor_names"]),
                anchor_method=str(z["anchor_method"]),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a NIQE model .npz ({exc})") from exc
    if model.mean.shape != (N_FEATURES,) or model.cov.shape != (N_FEATURES, N_FEATURES):
        raise InputError(
            f"{path}: NIQE model has mean {model.mean.shape} / cov {model.cov.shape}, "
            f"expected ({N_FEATURES},) / ({N_FEATURES}, {N_FEATURES})"
        )
    return model
