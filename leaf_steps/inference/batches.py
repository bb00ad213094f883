"""Files -> uint8 batches for scoring; a file that cannot be decoded is carried as an error, not raised.

Workers decode and transform with the student's :class:`~leaf_steps.training.transforms.EvalTransform`
(the decoder of every stage, the eval transform of training); the batch is normalised on the
model's device by the scorer. Batches come back in order (a DataLoader over an ordered batch
list), so the output order never depends on worker timing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from leaf_steps.core.errors import InputError
from leaf_steps.images import DEFAULT_MAX_PIXELS
from leaf_steps.training.scoring import batch_ranges
from leaf_steps.training.transforms import EvalTransform


@dataclass
class Batch:
    images: torch.Tensor  # uint8 N x 3 x crop x crop, the decodable files of the batch
    ok: list[int]  # dataset indices of those images, in order
    failed: list[tuple[int, str]]  # (dataset index, error message) of the others

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (pin_memory=True, CUDA)."""
        self.images = self.images.pin_memory()
        return self


class FileImages(torch.utils.data.Dataset):
    """Item i -> (uint8 tensor or None, i, error or None)."""

    def __init__(self, paths: Sequence[str], transform: EvalTransform, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            return self.transform(self.transform.load(self.paths[i], self.max_pixels)), i, None
        except InputError as exc:
            return None, i, str(exc)
        except (OSError, ValueError, MemoryError) as exc:  # e.g. a file vanishing, a transform on a degenerate image
            return None, i, f"{self.paths[i]}: {type(exc).__name__}: {exc}"


def collate(items: list[tuple[torch.Tensor | None, int, str | None]]) -> Batch:
    good = [(t, i) for t, i, _ in items if t is not None]
    images = torch.stack([t for t, _ in good]) if good else torch.zeros(0, dtype=torch.uint8)
    return Batch(images=images, ok=[i for _, i in good], failed=[(i, e) for t, i, e in items if t is None])


def default_workers(device: torch.device) -> int:
    """Loader processes: on CUDA enough to keep the GPU fed (up to 8); on CPU the forward pass
    needs the cores, so one decoder per two cores (at least one, keeping decode off the
    forward thread)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return max(1, cores // 2)


def loader(
    paths: Sequence[str],
    transform: EvalTransform,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.utils.data.DataLoader:
    """Ordered batches of ``paths`` (pinned memory on CUDA)."""
    return torch.utils.data.DataLoader(
        FileImages(paths, transform, max_pixels),
        batch_sampler=batch_ranges(len(paths), batch_size),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
