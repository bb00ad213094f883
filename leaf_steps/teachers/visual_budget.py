"""A teacher's visual-token budget (``teachers.<name>.visual_budget``): how many tokens one image may cost.

The image processor of the model decides how many visual tokens an image becomes, and that
number drives the cost of teacher scoring (prefill is the whole cost of a one-token answer).
By default LEAF sends nothing and the model's own processor settings apply. A budget is one of:

* ``{max_tiles: N}`` for InternVL: at most N tiles of 448 px (256 tokens each; a thumbnail
  tile is added only when more than one tile is used). InternVL3.5's default is 12 (+1 thumbnail).
  vLLM's InternVL processor (``OpenGVLab/InternVL*`` checkpoints, remote code) takes it as
  ``max_dynamic_patch``; the transformers-format checkpoints (``*-hf``) and the transformers
  backend take it as the image processor's ``max_patches`` (``GotOcr2ImageProcessor``).
* ``{max_pixels: P[, min_pixels: Q]}`` for Qwen-VL: the image is resized so that its pixel count
  lies in [Q, P] (one token per 28x28 px for Qwen2/2.5-VL, 32x32 px for Qwen3-VL). Sent as the
  processor's ``size: {longest_edge: P, shortest_edge: Q}``; Qwen3-VL's processor ignores
  ``max_pixels`` (transformers#41955; vLLM#34402 passes ``size``). ``size`` replaces both bounds,
  so Q defaults to the model's own minimum (Qwen3-VL 65536, Qwen2/2.5-VL 3136) and must be given
  for a model whose name does not say which it is; the transformers backend keeps its
  processor's own minimum.

The budget is part of the teacher's score settings: changing it rescores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leaf_steps.core.errors import ConfigError

KEYS = ("max_tiles", "max_pixels", "min_pixels")
# The processor keys a budget sets; extra_body.mm_processor_kwargs may not set them behind its back.
PROCESSOR_KEYS = frozenset(
    {
        "max_dynamic_patch",
        "min_dynamic_patch",
        "dynamic_image_size",
        "max_patches",
        "min_patches",
        "crop_to_patches",
        "size",
        "max_pixels",
        "min_pixels",
    }
)
# Qwen-VL processors' own minimum pixel counts (preprocessor_config.json "size.shortest_edge").
QWEN_MIN_PIXELS = {"qwen3_vl": 65536, "qwen2_vl": 3136}


@dataclass(frozen=True)
class VisualBudget:
    max_tiles: int | None = None
    max_pixels: int | None = None
    min_pixels: int | None = None

    @property
    def kind(self) -> str:
        return "tiles" if self.max_tiles is not None else "pixels"

    def describe(self) -> dict[str, int]:
        return {
            k: v
            for k, v in (
                ("max_tiles", self.max_tiles),
                ("max_pixels", self.max_pixels),
                ("min_pixels", self.min_pixels),
            )
            if v is not None
        }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_budget(value: Any, where: str) -> VisualBudget | None:
    """``visual_budget`` of a teacher spec -> VisualBudget (None: the model's own behaviour).

    ``where`` is the config key for messages, e.g. ``teachers.internvl.visual_budget``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: must be null, {{max_tiles: N}} (InternVL) or {{max_pixels: P}} (Qwen-VL), got {value!r}"
        )
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(KEYS)})")
    for key, v in value.items():
        if not _is_int(v) or v < 1:
            raise ConfigError(f"{where}.{key}: must be a positive integer, got {v!r}")
    tiles, pixels, min_pixels = (value.get(k) for k in KEYS)
    if (tiles is None) == (pixels is None):
        raise ConfigError(f"{where}: give either max_tiles (InternVL) or max_pixels (Qwen-VL)")
    if tiles is not None and min_pixels is not None:
        raise ConfigError(f"{where}.min_pixels: only with max_pixels (Qwen-VL)")
    if min_pixels is not None and min_pixels > pixels:
        raise ConfigError(f"{where}.min_pixels: {min_pixels} exceeds max_pixels {pixels}")
    return VisualBudget(tiles, pixels, min_pixels)


def family_of(model: str) -> str | None:
    """``internvl``, ``qwen3_vl``, ``qwen2_vl`` from a model id or path, else None."""
    name = model.lower().replace("_", "-").replace(".", "-")
    if "internvl" in name:
        return "internvl"
    if "qwen3-vl" in name:
        return "qwen3_vl"
    if "qwen2-vl" in name or "qwen2-5-vl" in name:
        return "qwen2_vl"
    return None


def check_family(budget: VisualBudget, family: str | None, model: str, where: str) -> None:
    if budget.kind == "tiles" and family not in (None, "internvl"):
        raise ConfigError(f"{where}.max_tiles: {model} is a Qwen-VL model, which has no tiles; give max_pixels instead")
    if budget.kind == "pixels" and family == "internvl":
        raise ConfigError(
            f"{where}.max_pixels: {model} is an InternVL model, which is budgeted in tiles; give max_tiles instead"
        )


def vllm_processor_kwargs(budget: VisualBudget | None, model: str, where: str) -> dict[str, Any]:
    """vLLM's per-request ``mm_processor_kwargs`` for ``budget`` ({} when there is none)."""
    if budget is None:
        return {}
    family = family_of(model)
    check_family(budget, family, model, where)
    if budget.kind == "tiles":
        # vllm/model_executor/models/internvl.py: InternVLProcessor(max_dynamic_patch=...) for the
        # remote-code checkpoints; transformers' InternVLProcessor (the -hf checkpoints) routes
        # max_patches to GotOcr2ImageProcessor.
        key = "max_patches" if model.rstrip("/").lower().endswith("-hf") else "max_dynamic_patch"
        return {key: budget.max_tiles}
    min_pixels = budget.min_pixels
    if min_pixels is None:
        if family not in QWEN_MIN_PIXELS:
            raise ConfigError(
                f"{where}.min_pixels: required for {model!r}: the processor's `size` replaces both "
                "bounds and LEAF cannot tell the model's own minimum from its name "
                "(Qwen3-VL: 65536, Qwen2/2.5-VL: 3136)"
            )
        min_pixels = QWEN_MIN_PIXELS[family]
    if min_pixels > budget.max_pixels:
        raise ConfigError(
            f"{where}.max_pixels: {budget.max_pixels} is below the model's minimum of {min_pixels} "
            "pixels; set min_pixels too"
        )
    return {"size": {"longest_edge": budget.max_pixels, "shortest_edge": min_pixels}}


def transformers_images_kwargs(
    budget: VisualBudget | None, image_processor: Any, model: str, where: str
) -> dict[str, Any]:
    """``images_kwargs`` for a transformers processor call ({} when there is none), checked against
    the image processor the checkpoint actually has."""
    if budget is None:
        return {}
    name = type(image_processor).__name__
    tiled = getattr(image_processor, "crop_to_patches", None) is not None and hasattr(image_processor, "max_patches")
    size = getattr(image_processor, "size", None)
    pixel_bounded = getattr(size, "longest_edge", None) is not None and getattr(size, "shortest_edge", None) is not None
    if budget.kind == "tiles":
        if not tiled:
            raise ConfigError(
                f"{where}.max_tiles: {model}'s image processor ({name}) does not tile images; "
                f"{'give max_pixels instead' if pixel_bounded else 'remove visual_budget'}"
            )
        return {"max_patches": budget.max_tiles}
    if not pixel_bounded:
        raise ConfigError(
            f"{where}.max_pixels: {model}'s image processor ({name}) has no pixel bounds; "
            f"{'give max_tiles instead' if tiled else 'remove visual_budget'}"
        )
    min_pixels = budget.min_pixels if budget.min_pixels is not None else int(size.shortest_edge)
    if min_pixels > budget.max_pixels:
        raise ConfigError(
            f"{where}.max_pixels: {budget.max_pixels} is below the processor's minimum of "
            f"{min_pixels} pixels; set min_pixels too"
        )
    return {"size": {"longest_edge": budget.max_pixels, "shortest_edge": min_pixels}}
