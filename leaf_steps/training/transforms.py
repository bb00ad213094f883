"""The student's view of an image: ONE definition of its input transforms.

Training (``distill``, ``calibrate``), their validation and test predictions, ``leaf predict``
and the exports (timm folder, ONNX) all take their pixels from here, so a deployed student sees
exactly what it was evaluated on.

Decoding (:func:`decode`): :func:`leaf_steps.images.load_rgb`, the decoder of every stage, with
JPEGs decoded at the smallest DCT scale (1/2, 1/4 or 1/8; libjpeg's scaled IDCT, Pillow's
``Image.draft``) that keeps both sides >= ``resize``. The image is resized to ``resize`` next
anyway; decoding a 1024x768 JPEG at 512x384 costs a third of the full decode and the resize a
quarter (``benchmarks/bench_predict.py``), which is what lets the loader keep up with the model
(on CPU, decoding competes with the forward pass for the same cores; a 12-megapixel phone photo
decodes 8x smaller). Training, evaluation, ``leaf predict`` and the export check all decode this
way, so a student always sees the pixels it was trained on; images smaller than ``2 x resize``
and non-JPEG files are decoded in full.

Evaluation (:class:`EvalTransform`, paper Sec. 4.1): the decoded RGB image is resized so its
shorter side is ``resize`` (bilinear, antialiased, aspect kept, :func:`resize_shorter`),
center-cropped to ``crop`` x ``crop`` and
turned into a uint8 CHW tensor. Normalisation, ``(x / 255 - mean) / std`` with the ImageNet
mean/std, is applied to whole batches on the model's device (:func:`normalize`): the loader
workers then ship 4x fewer bytes and skip a float pass, and the result is bit-for-bit what
torchvision's ``ToTensor`` + ``Normalize`` give (the same float32 operations in the same order).

timm (:meth:`EvalTransform.timm_data_config`): timm's eval transform is
``Resize(floor(crop / crop_pct))`` on the shorter side + ``CenterCrop(crop)`` +
``ToTensor`` + ``Normalize`` (``timm.data.transforms_factory.transforms_imagenet_eval``,
crop_mode "center"), so ``crop_pct = crop / resize``, interpolation "bilinear" and the same
mean/std reproduce this transform exactly; the crop_pct is nudged down by float ulps when
``crop / (crop / resize)`` would floor to ``resize - 1``.

Training batches are normalised per image in the loader (``ToTensor`` + ``Normalize``, the
same constants and the same values as :func:`normalize`).

Training augmentation (``student.augment``):

* ``random_resized_crop`` (the paper): ``RandomResizedCrop(crop)`` of the resized image with
  scale (0.5, 1) -- milder than torchvision's (0.08, 1), because blowing a tiny patch up to
  ``crop`` pixels blurs it and so changes the very quality being learned -- then a random
  horizontal flip;
* ``random_crop``: a ``crop`` x ``crop`` window of the resized image at a random position (no
  rescaling at all, so blur, noise, JPEG blocks and pixelation reach the network unchanged),
  then a random horizontal flip. With ``crop == resize`` on square images this is flips only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from leaf_steps.images import DEFAULT_MAX_PIXELS, load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROP_SCALE = (0.5, 1.0)
INTERPOLATION = "bilinear"
AUGMENTATIONS = ("random_resized_crop", "random_crop")


def decode(path: str | Path, resize: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The RGB image the student's transforms start from (JPEGs at a reduced DCT scale, see above)."""
    return load_rgb(path, max_pixels, draft_size=(resize, resize))


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear, antialiased; the longer side is
    ``int(size * long / short)``, as torchvision and timm compute it)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """HWC RGB PIL image -> CHW uint8 tensor (no scaling)."""
    from torchvision.transforms import functional as TF

    return TF.pil_to_tensor(image)


def normalize(images: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """A uint8 NCHW batch -> the float32 model input on ``device``: ``(x / 255 - mean) / std``.

    The same float32 operations, in the same order, as ``ToTensor`` (``x.float().div(255)``)
    followed by ``Normalize`` (``sub_(mean).div_(std)``), so the values are identical to the
    per-image torchvision pipeline.
    """
    device = torch.device(device)
    x = images.to(device, non_blocking=True).to(torch.float32).div_(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    x = x.sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def crop_pct_for(crop: int, resize: int) -> float:
    """The largest float ``p`` with ``floor(crop / p) == resize`` (timm's scale size)."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    while math.floor(crop / pct) > resize:
        pct = math.nextafter(pct, 1.0)
    return pct


@dataclass(frozen=True)
class EvalTransform:
    """Shorter side to ``resize``, center crop ``crop``, uint8 CHW tensor (normalise with :func:`normalize`)."""

    resize: int
    crop: int

    def __post_init__(self) -> None:
        if not (0 < self.crop <= self.resize):
            raise ValueError(f"crop ({self.crop}) must be between 1 and resize ({self.resize})")

    def load(self, path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode ``path`` the way the student's images are decoded (:func:`decode`)."""
        return decode(path, self.resize, max_pixels)

    def after_resize(self, resized: Image.Image) -> torch.Tensor:
        """The crop and tensor conversion of an image already passed through :func:`resize_shorter`
        (datasets cache the resized image across epochs)."""
        from torchvision.transforms import functional as TF

        return to_uint8_tensor(TF.center_crop(resized, self.crop))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.after_resize(resize_shorter(image, self.resize))

    def describe(self) -> dict[str, Any]:
        """The transform as plain values (checkpoint metadata, model cards, ONNX metadata)."""
        return {
            "decode": "RGB; JPEG at the smallest DCT scale keeping both sides >= resize",
            "resize": self.resize,
            "crop": self.crop,
            "resize_mode": "shorter_side",
            "crop_mode": "center",
            "interpolation": INTERPOLATION,
            "antialias": True,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "input_range": "RGB / 255",
        }

    def timm_data_config(self) -> dict[str, Any]:
        """timm's data config that makes ``timm.data.create_transform(**cfg)`` this exact transform."""
        return {
            "input_size": (3, self.crop, self.crop),
            "crop_pct": crop_pct_for(self.crop, self.resize),
            "crop_mode": "center",
            "interpolation": INTERPOLATION,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        }

    @classmethod
    def from_timm_data_config(cls, cfg: dict[str, Any]) -> EvalTransform:
        """The inverse of :meth:`timm_data_config`; refuses a timm config this transform cannot reproduce."""
        _, height, width = cfg["input_size"]
        problems = []
        if height != width:
            problems.append(f"input_size {cfg['input_size']} is not square")
        if cfg.get("crop_mode", "center") != "center":
            problems.append(f"crop_mode {cfg.get('crop_mode')!r} is not 'center'")
        if cfg.get("interpolation") != INTERPOLATION:
            problems.append(f"interpolation {cfg.get('interpolation')!r} is not {INTERPOLATION!r}")
        for key, expected in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            if tuple(cfg.get(key, ())) != expected:
                problems.append(f"{key} {cfg.get(key)} is not the ImageNet {expected}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(resize=math.floor(height / cfg["crop_pct"]), crop=height)


def train_transform(crop: int, augment: str = "random_resized_crop"):
    """The training augmentation of an image already resized to ``student.resize``, normalised
    per image (float32 CHW; the training loops feed it to the model as is)."""
    from torchvision import transforms as T

    if augment == "random_resized_crop":
        steps = [T.RandomResizedCrop(crop, scale=TRAIN_CROP_SCALE, antialias=True), T.RandomHorizontalFlip()]
    elif augment == "random_crop":
        steps = [T.RandomCrop(crop), T.RandomHorizontalFlip()]
    else:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {list(AUGMENTATIONS)}")
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
