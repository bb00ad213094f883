"""Config-time checks of a ``teachers.<name>`` block by its backend's own code.

The JSON schema only knows that a teacher has a ``backend``; which other keys a backend takes,
and which values, is stated once, in the backend module (``vllm.SPEC_DEFAULTS`` and
``vllm.validate_spec``, ``hf.TransformersSpec`` and ``hf.parse_spec``, ``niqe.SPEC_KEYS`` and
``niqe.validate_spec``). ``leaf validate-config`` and the workflow's start call those same
functions here, so a key a backend gains is accepted at once and a typo (``patch_sise``) fails
before any job runs, with the closest known key suggested. None of these imports torch or vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from leaf_steps.core.errors import ConfigError
from leaf_steps.core.errors import did_you_mean as closest

# Shortest image side each backend can take. The MLLMs: 28 px is Qwen2-VL's patch-merge factor
# (older transformers/vLLM processors refused smaller sides); InternVL resizes any image to its
# 448 px tiles. NIQE needs one whole patch (leaf_steps.teachers.niqe_model.patch_features).
MLLM_MIN_SIDE = 28


def _vllm() -> tuple[set[str], Callable[[str, dict[str, Any]], None], dict[str, set[str]]]:
    from leaf_steps.teachers import vllm

    def check(name: str, spec: dict[str, Any]) -> None:
        vllm.validate_spec({**spec, "name": name})

    return set(vllm.SPEC_DEFAULTS), check, {"launch": set(vllm.LAUNCH_DEFAULTS)}


def _transformers() -> tuple[set[str], Callable[[str, dict[str, Any]], None], dict[str, set[str]]]:
    from leaf_steps.teachers import hf

    def check(name: str, spec: dict[str, Any]) -> None:
        hf.parse_spec({**spec, "name": name})

    return set(hf.TransformersSpec.__dataclass_fields__) | set(hf._META_KEYS), check, {}


def _niqe() -> tuple[set[str], Callable[[str, dict[str, Any]], None], dict[str, set[str]]]:
    from leaf_steps.teachers import standin as niqe

    def check(name: str, spec: dict[str, Any]) -> None:
        niqe.validate_spec(dict(spec), f"teachers.{name}")

    return set(niqe.SPEC_KEYS), check, {}


# backend -> (its known keys, its own check, known keys of nested mappings); imported on first use.
_BACKENDS: dict[str, Callable[[], tuple[set[str], Callable[[str, dict[str, Any]], None], dict[str, set[str]]]]] = {
    "vllm": _vllm,
    "transformers": _transformers,
    "niqe": _niqe,
}


def known_keys(backend: str) -> set[str]:
    return _BACKENDS[backend]()[0]


def check_teacher(name: str, spec: Mapping[str, Any]) -> None:
    """ConfigError naming ``teachers.<name>.<key>`` for an unknown key (with the closest known one) or a
    value the backend refuses; the backend's own check runs on the block as the scoring step gets it."""
    backend = spec.get("backend")
    if backend not in _BACKENDS:
        raise ConfigError(
            f"teachers.{name}.backend: {backend!r} is not one of {sorted(_BACKENDS)}{closest(backend, _BACKENDS)}"
        )
    keys, check, nested = _BACKENDS[backend]()
    for key in spec:
        if key not in keys:
            raise ConfigError(
                f"teachers.{name}.{key}: unknown key for the {backend} backend{closest(key, keys)}; "
                f"known keys: {', '.join(sorted(keys - {'name'}))}"
            )
    for outer, inner in nested.items():
        block = spec.get(outer)
        if isinstance(block, Mapping):
            for key in block:
                if key not in inner:
                    raise ConfigError(
                        f"teachers.{name}.{outer}.{key}: unknown key{closest(key, inner)}; "
                        f"known keys: {', '.join(sorted(inner))}"
                    )
    check(name, dict(spec))


def min_image_side(spec: Mapping[str, Any]) -> int:
    """The shortest image side a teacher can score (see MLLM_MIN_SIDE)."""
    if spec.get("backend") == "niqe":
        from leaf_steps.teachers.niqe_model import DEFAULT_PATCH_SIZE

        return int(spec.get("patch_size") or DEFAULT_PATCH_SIZE)
    return MLLM_MIN_SIDE
