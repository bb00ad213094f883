"""The transformers teacher on CUDA in bf16 (the dtype GPU configs use), against float32 on the CPU.

A tiny random-weight Qwen2-VL built offline (``tiny:qwen2_vl``) scores the same images on both;
bf16 keeps 8 bits of mantissa, so log-likelihoods agree to 0.1 (a relative 2^-8 on each of a few layers),
not bit for bit.
Skipped without a CUDA device (``scripts/gpu_check.sh`` runs it on one).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from leaf_steps.teachers import ImageRef, make_teacher
from leaf_steps.teachers.teacher_math import LEVELS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PROMPTS = {
    "point": "How would you rate the overall perceptual quality of this image? "
    "Answer with exactly one word: Excellent, Good, Fair, Poor, or Bad.",
    "pair": "The first image is Image A and the second image is Image B. "
    "Which image has higher overall perceptual quality? Answer with one letter: A or B.",
}
SPEC = {"backend": "transformers", "model": "tiny:qwen2_vl", "batch_size": 4}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    refs = []
    for i, (h, w) in enumerate([(160, 160), (120, 200), (200, 96), (64, 64)]):
        pixels = np.clip(rng.normal(128, 20 + 15 * i, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        refs.append(ImageRef(f"img{i}", str(folder / f"img{i}.png")))
    return refs


def _logliks(scores):
    return np.array([s.logliks for s in scores])


def test_tiny_teacher_bf16_on_cuda_matches_float32_on_cpu(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LEAF_CACHE", str(tmp_path / "leaf_cache"))
    with make_teacher(SPEC | {"device": "cuda", "dtype": "bfloat16"}, PROMPTS) as gpu:
        assert gpu.describe()["dtype"] in ("bfloat16", "torch.bfloat16")
        points_gpu = gpu.score_points(images)
        pairs_gpu = gpu.score_pairs([(images[0], images[1]), (images[2], images[3])])
    with make_teacher(SPEC | {"device": "cpu", "dtype": "float32"}, PROMPTS) as cpu:
        points_cpu = cpu.score_points(images)
        pairs_cpu = cpu.score_pairs([(images[0], images[1]), (images[2], images[3])])
    for s in points_gpu + pairs_gpu:
        assert s.error is None and all(math.isfinite(x) for x in s.logliks)
    assert _logliks(points_gpu).shape == (len(images), len(LEVELS))
    np.testing.assert_allclose(_logliks(points_gpu), _logliks(points_cpu), atol=0.1)
    np.testing.assert_allclose(_logliks(pairs_gpu), _logliks(pairs_cpu), atol=0.1)
