"""Shared pieces of the student stages (:mod:`leaf_steps.distill`, :mod:`leaf_steps.calibrate`).

- Settings: the ``student`` / ``distill`` / ``calibration`` blocks of a ``--settings`` JSON are
  validated against the same JSON schema as the pipeline config, with its defaults filled.
- Model: ``timm.create_model(name, pretrained=..., num_classes=1)``. ``pretrained: true``
  goes through timm's normal Hugging Face Hub download (honouring ``HF_HOME`` /
  ``HF_HUB_OFFLINE``), so a cluster with a populated cache or network works as usual; a
  failed fetch is a :class:`ConfigError` naming ``student.pretrained``.
- Images, transforms, loading and scoring live in :mod:`leaf_steps.training` (``data``,
  ``transforms``, ``scoring``, ``runtime``) and are re-exported here, so the stages keep
  calling ``st.ImageDataset``, ``st.train_transform``, ``st.predict`` and so on. The eval
  transform is :class:`~leaf_steps.training.transforms.EvalTransform`, the same object
  ``leaf predict`` and the exports use.
- Runtime: device choice ``auto|cpu|cuda``, bf16 autocast on CUDA when ``amp`` is set
  (never on CPU), AdamW via timm (no weight decay on biases and norm layers), cosine
  learning-rate decay per epoch, full seeding (same seed -> same weights on CPU).
- Checkpoints: safetensors with string metadata (model name, stage, settings hash,
  settings JSON, output units); :func:`load_checkpoint` rebuilds the timm model from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch

from leaf_steps.config import load_schema
from leaf_steps.errors import ConfigError, InputError
from leaf_steps.io import atomic_write_bytes, stable_hash
from leaf_steps.progress import progress  # noqa: F401  (used as st.progress by the stages)

# The student's images, transforms, loaders and forward pass (re-exported: the stages use st.<name>).
from leaf_steps.training.data import (  # noqa: F401
    DEFAULT_CACHE_BYTES,
    MANIFEST_COLUMNS,
    ImageCache,
    ImageDataset,
    ImageRow,
    check_images_exist,
    image_rows,
    load_image,
    make_loader,
    read_manifest,
    resolve_image_path,
    shared_cache,
)
from leaf_steps.training.runtime import DEVICES, autocast, choose_device, use_amp  # noqa: F401
from leaf_steps.training.scoring import TorchScorer, predict  # noqa: F401
from leaf_steps.training.transforms import (  # noqa: F401
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_CROP_SCALE,
    EvalTransform,
    train_transform,
)

log = logging.getLogger("leaf.student")


# --------------------------------------------------------------------------- settings

def settings_block(settings: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``settings[key]`` validated against the config schema's ``key`` block, defaults filled."""
    block = settings.get(key)
    if not isinstance(block, dict):
        raise ConfigError(f"settings.{key}: missing or not a mapping (got {type(block).__name__})")
    schema = load_schema()["properties"][key]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(block), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join([key, *map(str, err.absolute_path)])
        raise ConfigError(f"settings.{where}: {err.message}")
    filled = {k: sub["default"] for k, sub in schema.get("properties", {}).items() if "default" in sub}
    filled.update(block)
    return filled


def student_block(settings: Any) -> dict[str, Any]:
    """The ``student`` block of a stage's settings JSON, checked the same way for both stages."""
    if not isinstance(settings, dict):
        raise ConfigError(f"--settings: expected a JSON object, got {type(settings).__name__}")
    student = settings_block(settings, "student")
    if student["crop"] > student["resize"]:
        raise ConfigError(f"settings.student.crop ({student['crop']}) must be <= student.resize ({student['resize']})")
    if student["train_crop"] is not None and student["train_crop"] > student["resize"]:
        raise ConfigError(f"settings.student.train_crop ({student['train_crop']}) must be <= student.resize "
                          f"({student['resize']})")
    return student


def student_train_transform(student: Mapping[str, Any]):
    """The training augmentation a checked student block asks for (``augment`` at ``train_crop``,
    which defaults to ``crop``)."""
    return train_transform(student["train_crop"] or student["crop"], student["augment"])


def settings_flag(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"settings.{key}: expected true/false, got {value!r}")
    return value


def settings_seed(settings: Mapping[str, Any], default: int) -> int:
    value = settings.get("seed", default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"settings.seed: expected a non-negative integer, got {value!r}")
    return value


def settings_model_name(settings: Mapping[str, Any], student: Mapping[str, Any]) -> str:
    """The variant's ``student_model`` overrides ``student.model``."""
    name = settings.get("student_model") or student["model"]
    if not isinstance(name, str):
        raise ConfigError(f"settings.student_model: expected a timm model name, got {name!r}")
    return name


# --------------------------------------------------------------------------- runtime

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    On CPU this makes a run bit-for-bit repeatable for a fixed thread count; on CUDA it
    removes the usual sources of nondeterminism (cuDNN autotuning, atomics where torch
    has a deterministic alternative) -- ``warn_only`` keeps ops without one usable.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms also sets the flag of torch.compile's inductor, importing
    # torch._inductor to do so: 2-4 s at the start of every student job (measured with cProfile on
    # the demo's calibrations). The students are never compiled, so only the eager flag is set,
    # the way that function sets it; the public call remains the fallback.
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is not None:
        set_flag(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; timm leaves biases and normalisation parameters out of weight decay."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay stepped once per epoch: epoch e uses lr * (1 + cos(pi e / epochs)) / 2."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def batch_indices(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``order``; a trailing batch of one joins the previous batch,
    because BatchNorm cannot normalise a single sample in training mode."""
    batches = [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2].extend(batches.pop())
    return batches


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- model

def build_model(name: str, pretrained: bool) -> torch.nn.Module:
    """A timm regressor with one output. Fails clearly for an unknown name or unfetchable weights."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise ConfigError(f"student.model: {name!r} is not a timm model" + (f" (similar: {close})" if close else ""))
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=1)
    except Exception as exc:
        if not pretrained:
            raise
        raise ConfigError(
            f"student.pretrained: could not fetch pretrained weights for {name!r} through timm / the "
            f"Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Pre-populate the Hub cache (HF_HOME) on a machine with network access, or set "
            "student.pretrained: false") from exc
    # channels_last weights: convolutions run in the NHWC kernels, 1.4x faster per training step on CPU
    # (the demo's student, measured) and the recommended layout with bf16 on GPUs. Checkpoints are
    # saved contiguous (save_checkpoint), so files are the same either way.
    return model.to(memory_format=torch.channels_last)


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The final layer producing the single score (timm's classifier)."""
    layer = model.get_classifier()
    if not hasattr(layer, "weight") or getattr(layer, "bias", None) is None:
        raise ConfigError(f"student.model: the classifier of {type(model).__name__} ({layer}) has no weight "
                          "and bias to calibrate; pick a timm model with a linear head")
    return layer


@torch.no_grad()
def fold_affine_into_head(model: torch.nn.Module, scale: float, shift: float) -> None:
    """Make the model output ``scale * old_output + shift`` by rescaling the last layer."""
    layer = output_layer(model)
    layer.weight.mul_(scale)
    layer.bias.mul_(scale).add_(shift)


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(model: torch.nn.Module, path: str | Path, *, model_name: str, stage: str,
                    settings: Mapping[str, Any], output_units: str, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the weights as safetensors (atomically) with metadata to rebuild and trace the model."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "model": model_name,
        "stage": stage,
        "settings_hash": stable_hash(settings),
        "settings": json.dumps(settings, sort_keys=True, default=str),
        "output_units": output_units,
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise InputError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if "model" not in meta:
        raise InputError(f"{path}: checkpoint metadata has no 'model' entry (not written by leaf_steps.student)")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild the timm model named in the metadata (no weight download) and load the weights."""
    from safetensors.torch import load_file

    meta = read_checkpoint_metadata(path)
    model = build_model(meta["model"], pretrained=False)
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match timm model {meta['model']!r} ({exc})") from exc
    return model.to(device), meta


# --------------------------------------------------------------------------- metrics

def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """SRCC; NaN when undefined (fewer than 2 values or a constant vector)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """PLCC; NaN when undefined (fewer than 2 values or a constant vector)."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearsonr(x, y).statistic)


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
