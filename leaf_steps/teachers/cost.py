"""What one teacher request costs: visual tokens per image and prefill FLOPs per request.

Both come from the libraries that define them, not from a re-derivation:

* visual tokens: the model families' own image processors in ``transformers``
  (InternVL3.5: ``GotOcr2ImageProcessor`` with 448 px tiles, up to 12 tiles chosen by aspect
  ratio plus a thumbnail, 256 tokens per tile after the 0.5 pixel shuffle; Qwen3-VL:
  ``Qwen2VLImageProcessor`` with 16 px patches merged 2x2, 64..16M pixels), run on a blank
  image of the size LEAF sends (longer side <= ``image_max_side``, never upscaled), with the
  teacher's ``visual_budget`` applied as the backends pass it (InternVL: at most ``max_tiles``
  tiles; Qwen-VL: ``max_pixels`` / ``min_pixels``);
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the ``transformers`` modules of
  each architecture, built on the meta device (no weights, no memory) from the published
  configuration values below. The count is polynomial in the sequence length (linear layers
  grow with L, attention with L^2), so three counted lengths give the exact curve
  ``c + a * L + b * L^2`` for any L; the same holds per image for the vision towers. The layers
  of a stack are identical, so each count is taken on one- and two-layer models and extended to
  the full depth (``fixed + depth * per_layer``, the same integer as tracing every layer).

The counter counts attention as full (non-causal) matmuls, which is what a prefill kernel
executes up to a factor < 2 on the attention part; one answer token is generated per request,
so prefill is the whole cost.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

from leaf_steps.teachers.image_encoding import target_size
from leaf_steps.teachers.visual_budget import QWEN_MIN_PIXELS, VisualBudget

Family = Literal["internvl", "qwen3vl"]
VOCAB = 151936  # Qwen3 tokenizer, all four teachers
TEXT_TOKENS = 100  # prompt + chat template per request (the prompts in config/ are 30-40 tokens)


@dataclass(frozen=True)
class TeacherArch:
    """Published sizes of one teacher (config.json of the model repository)."""

    family: Family
    # language model (Qwen3 decoder)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    # vision tower
    v_hidden: int
    v_intermediate: int
    v_layers: int
    v_heads: int


# The four teachers of Table 4. InternVL3.5: InternViT-300M-448px-V2_5 (8B) or InternViT-6B-448px-V2_5
# (38B) + Qwen3-8B / Qwen3-32B; Qwen3-VL: a 27-layer 1152-wide ViT + Qwen3-8B / Qwen3-32B-sized decoders.
ARCHS: dict[str, TeacherArch] = {
    "OpenGVLab/InternVL3_5-8B": TeacherArch("internvl", 4096, 12288, 36, 32, 8, 1024, 4096, 24, 16),
    "OpenGVLab/InternVL3_5-38B": TeacherArch("internvl", 5120, 25600, 64, 64, 8, 3200, 12800, 45, 25),
    "Qwen/Qwen3-VL-8B-Instruct": TeacherArch("qwen3vl", 4096, 12288, 36, 32, 8, 1152, 4304, 27, 16),
    "Qwen/Qwen3-VL-32B-Instruct": TeacherArch("qwen3vl", 5120, 25600, 64, 64, 8, 1152, 4304, 27, 16),
}


def arch_for(model: str) -> TeacherArch:
    """The architecture of a teacher model name (exact repository id, or a known suffix)."""
    for name, arch in ARCHS.items():
        if model == name or model.rstrip("/").endswith(name.split("/")[1]):
            return arch
    raise KeyError(f"no cost model for teacher model {model!r}; known: {sorted(ARCHS)}")


# --------------------------------------------------------------------------- visual tokens

INTERNVL_MAX_TILES = 12  # InternVL3.5's max_dynamic_patch (a thumbnail tile comes on top when > 1 tile)
QWEN3VL_MAX_PIXELS = 16777216  # Qwen3-VL's preprocessor_config.json size.longest_edge


@functools.lru_cache(maxsize=16)
def _processor(family: Family, budget: VisualBudget | None = None):
    from transformers import GotOcr2ImageProcessor, Qwen2VLImageProcessor

    if family == "internvl":
        if budget is not None and budget.max_tiles is None:
            raise ValueError(f"InternVL is budgeted in tiles, got {budget.describe()}")
        tiles = budget.max_tiles if budget is not None else INTERNVL_MAX_TILES
        return GotOcr2ImageProcessor(
            crop_to_patches=True, min_patches=1, max_patches=tiles, size={"height": 448, "width": 448}
        )
    if budget is not None and budget.max_pixels is None:
        raise ValueError(f"Qwen3-VL is budgeted in pixels, got {budget.describe()}")
    longest = budget.max_pixels if budget is not None else QWEN3VL_MAX_PIXELS
    shortest = (
        budget.min_pixels if budget is not None and budget.min_pixels is not None else QWEN_MIN_PIXELS["qwen3_vl"]
    )
    return Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, size={"longest_edge": longest, "shortest_edge": shortest}
    )


@functools.lru_cache(maxsize=4096)
def image_layout(
    family: Family, width: int, height: int, max_side: int = 1024, budget: VisualBudget | None = None
) -> tuple[int, int, int]:
    """(visual tokens, vision units, patches per unit) of one image as LEAF sends it under ``budget``
    (None: the model's defaults).

    InternVL: units are 448 px tiles of 1024 patches each. Qwen3-VL: one unit of h x w patches."""
    from PIL import Image

    w, h = target_size(width, height, max_side)
    out = _processor(family, budget)(images=[Image.new("RGB", (w, h))], return_tensors="np")
    if family == "internvl":
        tiles = int(out["num_patches"][0])
        return 256 * tiles, tiles, 1024
    t, gh, gw = (int(v) for v in out["image_grid_thw"][0])
    return t * gh * gw // 4, 1, t * gh * gw


# --------------------------------------------------------------------------- FLOPs


def _count(module, *args, **kwargs) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*args, **kwargs)
    return int(counter.get_total_flops())


def _quadratic(f, n1: int, n2: int, n3: int) -> tuple[float, float, float]:
    """(c, a, b) with f(n) = c + a*n + b*n^2, from three exact counts."""
    import numpy as np

    ns = np.array([n1, n2, n3], dtype=np.float64)
    b, a, c = np.linalg.solve(np.vander(ns, 3), np.array([f(n) for n in (n1, n2, n3)], dtype=np.float64))
    return float(c), float(a), float(b)


def _at_depth(count, depth: int) -> int:
    """FLOPs of a stack of ``depth`` identical layers, from models of one and two layers.

    Every layer of a decoder or ViT runs the same operations on the same shapes, so the count is
    ``fixed + depth * per_layer`` exactly; tracing the full depth (64 layers for the 32B/38B teachers)
    would give the same integer in many times the time."""
    one = count(1)
    return one if depth == 1 else one + (depth - 1) * (count(2) - one)


@functools.lru_cache(maxsize=8)
def decoder_coefficients(arch: TeacherArch) -> tuple[float, float, float]:
    """FLOPs of the language model's decoder layers on L tokens = c + a*L + b*L^2."""
    return _quadratic(lambda n: _at_depth(lambda layers: _decoder_flops(arch, n, layers), arch.layers), 256, 1024, 2048)


def _decoder_flops(arch: TeacherArch, n: int, layers: int) -> int:
    """Counted FLOPs of a ``layers``-deep Qwen3 decoder (the language model) on n tokens."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    cfg = Qwen3Config(
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        head_dim=128,
        vocab_size=VOCAB,
    )
    with torch.device("meta"):
        model = Qwen3Model(cfg)
        x = torch.empty(1, n, arch.hidden)
    return _count(model, inputs_embeds=x)


def _tower_flops(arch: TeacherArch, side_patches: int, patch: int, layers: int | None = None) -> int:
    """Counted FLOPs of the vision tower (``layers`` deep, default the architecture's depth) on one
    square unit of side_patches^2 patches."""
    import torch
    from transformers import InternVLVisionConfig, InternVLVisionModel

    cfg = InternVLVisionConfig(
        hidden_size=arch.v_hidden,
        intermediate_size=arch.v_intermediate,
        num_hidden_layers=arch.v_layers if layers is None else layers,
        num_attention_heads=arch.v_heads,
        image_size=[side_patches * patch] * 2,
        patch_size=[patch, patch],
    )
    with torch.device("meta"):
        model = InternVLVisionModel(cfg)
        pixels = torch.empty(1, 3, side_patches * patch, side_patches * patch)
    return _count(model, pixel_values=pixels)


@functools.lru_cache(maxsize=8)
def vision_coefficients(arch: TeacherArch) -> tuple[float, float, float]:
    """FLOPs of the vision tower plus projector(s) on one unit of P patches = c + a*P + b*P^2
    (c: the class token's share).

    Both families' towers are pre-norm ViTs; Qwen3-VL's is counted with the same module at its
    own sizes (its 3D patch embedding and rotary embeddings add under 1%)."""
    import torch
    from torch import nn

    # The projector maps 2x2 neighbouring patches to one LLM token (pixel shuffle / spatial merge);
    # Qwen3-VL also merges three intermediate layers (DeepStack) with mergers of the same size.
    merged = 4 * arch.v_hidden
    inner = arch.hidden if arch.family == "internvl" else merged
    with torch.device("meta"):
        projector = nn.Sequential(
            nn.LayerNorm(merged), nn.Linear(merged, inner), nn.GELU(), nn.Linear(inner, arch.hidden)
        )
        per_token = _count(projector, torch.empty(1, merged))
    projectors = 1 if arch.family == "internvl" else 4
    patch = 14 if arch.family == "internvl" else 16
    c, a, b = _quadratic(
        lambda p: _at_depth(lambda layers: _tower_flops(arch, math.isqrt(p), patch, layers), arch.v_layers),
        16**2,
        24**2,
        32**2,
    )
    return c, a + projectors * per_token / 4, b  # one projected token per 4 patches


def _vision_flops(arch: TeacherArch, units: int, patches: int) -> float:
    c, a, b = vision_coefficients(arch)
    return units * (c + a * patches + b * patches**2)


def image_cost(
    model: str, width: int, height: int, max_side: int = 1024, budget: VisualBudget | None = None
) -> tuple[int, float]:
    """(visual tokens, vision tower + projector FLOPs) of one image shown to ``model`` under ``budget``."""
    arch = arch_for(model)
    n_tokens, units, patches = image_layout(arch.family, width, height, max_side, budget)
    return n_tokens, _vision_flops(arch, units, patches)


def decoder_curve(model: str) -> tuple[float, float, float]:
    """(c, a, b): the language model's FLOPs on a prompt of T tokens are c + a*T + b*T^2,
    the logits of the one position that is read included in c."""
    arch = arch_for(model)
    c, a, b = decoder_coefficients(arch)
    return c + 2 * arch.hidden * VOCAB, a, b


def request_flops(
    model: str,
    images: list[tuple[int, int]],
    max_side: int = 1024,
    text_tokens: int = TEXT_TOKENS,
    budget: VisualBudget | None = None,
) -> tuple[int, float]:
    """(prefill tokens, FLOPs) of one request showing ``images`` (width, height) to ``model``."""
    tokens, vision = text_tokens, 0.0
    for w, h in images:
        n_tokens, flops = image_cost(model, w, h, max_side, budget)
        tokens += n_tokens
        vision += flops
    c, a, b = decoder_curve(model)
    return tokens, vision + c + a * tokens + b * tokens**2
