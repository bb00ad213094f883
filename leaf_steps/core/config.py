"""Load and validate the pipeline config (one JSON schema for Snakemake and the steps)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leaf_steps.core.errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema, fill defaults, and check cross-references.

    Raises ConfigError naming the offending key, e.g. ``distill.lr: 'x' is not of type 'number'``.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            if err.validator == "additionalProperties":
                lines.append(f"{_key_path(err)}: {err.message}{_suggestion(err)} (unknown key; see config/README.md)")
            else:
                lines.append(f"{_key_path(err)}: {err.message}")
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(lines))
    _fill_defaults(config, load_schema())
    teachers = config["teachers"]
    if config["teacher"] not in teachers:
        raise ConfigError(f"{source}: teacher: {config['teacher']!r} is not a key of teachers {sorted(teachers)}")
    for name, variant in config["variants"].items():
        t = variant.get("teacher", config["teacher"])
        if t not in teachers:
            raise ConfigError(f"{source}: variants.{name}.teacher: {t!r} is not a key of teachers {sorted(teachers)}")
        if variant.get("distill", True) and not (variant.get("use_point", True) or variant.get("use_pair", True)):
            raise ConfigError(f"{source}: variants.{name}: distill needs use_point or use_pair (or set distill: false)")
    headline = config["evaluation"].get("headline_variant")
    if headline is not None and headline not in config["variants"]:
        raise ConfigError(f"{source}: evaluation.headline_variant: {headline!r} is not a key of variants")
    if config["student"]["crop"] > config["student"]["resize"]:
        raise ConfigError(f"{source}: student.crop ({config['student']['crop']}) must be <= student.resize")
    if (config["student"]["train_crop"] or 0) > config["student"]["resize"]:
        raise ConfigError(f"{source}: student.train_crop ({config['student']['train_crop']}) must be <= student.resize")
    # The blocks the schema leaves open are checked by the code that reads them (leaf_steps.core.config_checks).
    # Imported by name: those checks run at validation, never inside a step, so they stay out of the
    # code hash of the steps that import this module (leaf_steps.core.codehash follows import statements).
    checks = importlib.import_module("leaf_steps.core.config_checks")
    try:
        checks.check_blocks(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _suggestion(error: jsonschema.ValidationError) -> str:
    """`` (did you mean 'lambda_dis'?)`` for an unknown key next to a known one."""
    from leaf_steps.core.errors import did_you_mean as closest

    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    extra = [k for k in (error.instance or {}) if k not in known] if isinstance(error.instance, dict) else []
    hints = [f"{k!r}: {closest(k, known).strip(' ()')}" for k in extra if closest(k, known)]
    return f" ({'; '.join(hints)})" if hints else ""


def _fill_defaults(node: Any, schema: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = sub["default"]
        if key in node:
            _fill_defaults(node[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return validate_config(config, source=str(path))


def variant_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Resolved settings of one student variant (teacher, student model, which signals)."""
    v = config["variants"][name]
    return {
        "teacher": v.get("teacher", config["teacher"]),
        "student_model": v.get("student_model", config["student"]["model"]),
        "use_point": v.get("use_point", True),
        "use_pair": v.get("use_pair", True),
        "use_confidence": v.get("use_confidence", True),
        "distill": v.get("distill", True),
    }
