"""The student's transforms (leaf_steps.training.transforms): exact pixels, not approximations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from leaf_steps.training.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    decode,
    normalize,
    train_transform,
)

RNG = np.random.default_rng(3)


def _image(w: int, h: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _symmetries(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a square CHW tensor."""
    out = []
    for t in (x, x.transpose(1, 2)):
        out += [t, t.flip(2), t.flip(1), t.flip(1).flip(2)]
    return out


def test_device_normalisation_equals_torchvision_per_image():
    image = _image(37, 29)
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    ours = normalize(T.PILToTensor()(image).unsqueeze(0))[0]
    assert torch.equal(ours, reference)


def test_random_crop_moves_pixels_without_resampling():
    augment, n_views = "random_crop", 2
    image = _image(48, 48)
    exact = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    views = _symmetries(exact)
    tf = train_transform(48, augment)
    torch.manual_seed(0)
    seen = set()
    for _ in range(80):
        out = tf(image)
        match = [i for i, v in enumerate(views) if torch.equal(out, v)]
        assert match, "an augmented view is not a symmetry of the image: pixels were resampled"
        seen.add(match[0])
    assert len(seen) == n_views


def test_random_crop_takes_windows_of_the_resized_image():
    image = _image(64, 64)
    exact = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    out = train_transform(40, "random_crop")(image)
    windows = [exact[:, y : y + 40, x : x + 40] for y in range(25) for x in range(25)]
    assert any(torch.equal(out, w) or torch.equal(out, w.flip(2)) for w in windows)


def test_paper_augmentation_rescales():
    out = train_transform(32, "random_resized_crop")(_image(64, 48))
    assert out.shape == (3, 32, 32)


@pytest.mark.parametrize(
    "size, resize, decoded",
    [
        ((1024, 768), 256, (512, 384)),
        ((4000, 3000), 256, (500, 375)),
        ((500, 400), 256, (500, 400)),
        ((600, 300), 128, (300, 150)),
    ],
)
def test_jpegs_decode_at_the_smallest_scale_keeping_the_resize(tmp_path, size, resize, decoded):
    path = tmp_path / "x.jpg"
    _image(*size).save(path, quality=90)
    assert decode(path, resize).size == decoded
    png = tmp_path / "x.png"
    _image(*size).save(png)
    assert decode(png, resize).size == size  # only JPEGs have DCT scaling


def test_eval_transform_output():
    out = EvalTransform(40, 32)(_image(90, 60))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="crop"):
        EvalTransform(30, 32)
