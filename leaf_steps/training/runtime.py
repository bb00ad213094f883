"""Where and how the student runs: device choice, bf16 autocast (CUDA only)."""

from __future__ import annotations

import contextlib

import torch

from leaf_steps.core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def choose_device(name: str | None) -> torch.device:
    name = name or "auto"
    if name not in DEVICES:
        raise ConfigError(f"settings.device: {name!r} is not one of {list(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("settings.device: 'cuda' requested but no CUDA device is available to torch")
    return torch.device(name)


def use_amp(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is used on CUDA only; on CPU it is slower than float32 and changes results."""
    return bool(amp) and device.type == "cuda"


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if use_amp(device, amp):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
