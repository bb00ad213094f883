"""The student model and its checkpoints.

- Model: ``timm.create_model(name, pretrained=..., num_classes=1)``. ``pretrained: true`` goes
  through timm's normal Hugging Face Hub download (honouring ``HF_HOME`` / ``HF_HUB_OFFLINE``);
  a failed fetch is a :class:`ConfigError` naming ``student.pretrained``.
- Checkpoints: safetensors with string metadata (model name, stage, settings hash, settings JSON,
  output units); :func:`load_checkpoint` rebuilds the timm model from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import atomic_write_bytes, stable_hash


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
            "student.pretrained: false"
        ) from exc
    # channels_last weights: convolutions run in the NHWC kernels, 1.4x faster per training step on CPU
    # (the demo's student, measured) and the recommended layout with bf16 on GPUs. Checkpoints are
    # saved contiguous (save_checkpoint), so files are the same either way.
    return model.to(memory_format=torch.channels_last)


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The final layer producing the single score (timm's classifier)."""
    layer = model.get_classifier()
    if not hasattr(layer, "weight") or getattr(layer, "bias", None) is None:
        raise ConfigError(
            f"student.model: the classifier of {type(model).__name__} ({layer}) has no weight "
            "and bias to calibrate; pick a timm model with a linear head"
        )
    return layer


@torch.no_grad()
def fold_affine_into_head(model: torch.nn.Module, scale: float, shift: float) -> None:
    """Make the model output ``scale * old_output + shift`` by rescaling the last layer."""
    layer = output_layer(model)
    layer.weight.mul_(scale)
    layer.bias.mul_(scale).add_(shift)


def save_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    *,
    model_name: str,
    stage: str,
    settings: Mapping[str, Any],
    output_units: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
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
        raise InputError(
            f"{path}: checkpoint metadata has no 'model' entry (not written by leaf_steps.training.models)"
        )
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
