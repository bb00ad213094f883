"""Scoring images with a torch student: the one forward path of validation, test predictions and
``leaf predict``.

:class:`TorchScorer` takes the uint8 batches of :class:`~leaf_steps.training.transforms.EvalTransform`,
normalises them on the device, runs the model in eval mode (channels_last unless asked not to,
bf16 autocast on CUDA when ``amp``) and returns float64 scores. :func:`predict` scores manifest
rows with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from leaf_steps.core.progress import progress
from leaf_steps.training.data import ImageCache, ImageDataset, ImageRow, make_loader
from leaf_steps.training.runtime import autocast, use_amp
from leaf_steps.training.transforms import EvalTransform, normalize


class TorchScorer:
    """uint8 NCHW batch -> float64 scores of ``model`` (eval mode, channels_last, bf16 autocast on CUDA)."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device | str, amp: bool = False, channels_last: bool = True
    ):
        self.device = torch.device(device)
        self.amp = use_amp(self.device, amp)
        self.channels_last = channels_last
        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            x = normalize(images, self.device, self.channels_last)
            with autocast(self.device, self.amp):
                scores = self.model(x).reshape(-1)
        finally:
            self.model.train(was_training)
        return scores.float().cpu().numpy().astype(np.float64)


def batch_ranges(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive index batches of ``range(n)`` (evaluation: any batch size, a single image included)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def predict(
    model: torch.nn.Module,
    rows: Sequence[ImageRow],
    *,
    resize: int,
    crop: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    amp: bool = False,
    num_workers: int = 0,
    cache: ImageCache | None = None,
    desc: str = "predict",
) -> np.ndarray:
    """Scores of manifest ``rows`` (the eval transform, eval mode) as float64, in row order.
    An unreadable image raises an InputError naming its manifest row."""
    device = torch.device(device)
    if not rows:
        return np.zeros(0, dtype=np.float64)
    # The stages call this between training epochs: the model keeps its memory format (channels_last
    # would convert its weights in place, under the optimizer); leaf predict's own models use it.
    scorer = TorchScorer(model, device, amp, channels_last=False)
    dataset = ImageDataset(rows, EvalTransform(resize, crop).after_resize, resize, cache)
    loader = make_loader(dataset, batch_ranges(len(rows), batch_size), num_workers, 0, device)
    out = np.empty(len(rows), dtype=np.float64)
    for images, idx in progress(loader, total=len(loader), desc=desc):
        out[idx.numpy()] = scorer(images)
    return out
