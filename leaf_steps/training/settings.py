"""The student stages' settings: the ``student`` / ``distill`` / ``calibration`` blocks of a
``--settings`` JSON, validated against the pipeline config's JSON schema with its defaults filled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from leaf_steps.core.config import load_schema
from leaf_steps.core.errors import ConfigError
from leaf_steps.training.transforms import train_transform


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
        raise ConfigError(
            f"settings.student.train_crop ({student['train_crop']}) must be <= student.resize ({student['resize']})"
        )
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
