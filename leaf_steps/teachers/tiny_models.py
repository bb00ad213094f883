"""Tiny random-weight vision-language models of real architectures, built offline.

They exist so that the transformers teacher backend (and the whole DAG) can run end to
end on a laptop CPU with no download: the checkpoint folder has exactly the layout of a
hub checkpoint (``config.json``, ``model.safetensors``, tokenizer, image processor, chat
template), so the backend loads it through the ordinary ``from_pretrained`` path. The
weights are random, so the "quality" they report is meaningless; only the plumbing is real.

The tokenizer is a byte-level BPE trained here with the ``tokenizers`` library on a small
corpus holding the prompt words, the answer labels and the chat roles, plus the model's
own special tokens, so the label words are single tokens as they are for the real models.

``tiny:<arch>`` (or ``tiny:<arch>:<seed>``) in a teacher spec resolves through
:func:`ensure_tiny_model` to a cached folder ``$LEAF_CACHE/tiny/<arch>-<hash>`` (default
``~/.cache/leaf/tiny``), built once and atomically (temp folder, then rename).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaf_steps.core.errors import ConfigError
from leaf_steps.core.io import stable_hash, write_json
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS

# Bump when the build recipe changes in a way the recipe dicts below do not show.
RECIPE_VERSION = 1
MARKER_FILE = "leaf_tiny_model.json"

# Words the tokenizer must know well: prompts, the answer labels in their variants, chat roles.
CORPUS: tuple[str, ...] = (
    "How would you rate the overall perceptual quality of this image?",
    "Answer with exactly one word: Excellent, Good, Fair, Poor, or Bad.",
    "The first image is Image A and the second image is Image B.",
    "Which image has higher overall perceptual quality? Answer with one letter: A or B.",
    "You are a helpful assistant.",
    "system user assistant",
    "Excellent Good Fair Poor Bad A B",
    "excellent good fair poor bad a b",
    "EXCELLENT GOOD FAIR POOR BAD",
    # Each label also as a line of its own: an answer right after "assistant\n" has no leading space.
    *(form for label in (*LEVELS, *PAIR_LABELS) for form in (label, label.lower(), label.upper())),
)
CORPUS_REPEATS = 4  # repeated so the label words win merges over chance byte pairs
TOKENIZER_VOCAB_SIZE = 512

# Each recipe: the model's special tokens and chat template, and the tiny config values.
# hidden 64 / 2 layers / head_dim 16: a forward pass on a 160 px image takes milliseconds.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
# Larger than the usual 0.02 so random logits are O(1) apart: the label probabilities then
# actually depend on the image, which makes padding/batching bugs visible in the tests.
_INIT_RANGE = 0.25

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The Qwen2-VL chat template, minus tool calls and "Picture N:" labels.
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# 112 x 112 max pixels with 14 px patches merged 2 x 2: a 160 px image becomes <= 16 image tokens.
_QWEN_PIXELS = {"min_pixels": 28 * 28, "max_pixels": 112 * 112}

_INTERNVL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
]
_INTERNVL_NAMED = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# The InternVL3 (-hf) chat template: one <IMG_CONTEXT> per image, expanded by the processor.
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Multimodal RoPE splits head_dim / 2 = 8 frequency pairs over (time, height, width).
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}

RECIPES: dict[str, dict[str, Any]] = {
    "qwen2_vl": {
        "specials": _QWEN_SPECIALS,
        "template": _QWEN_TEMPLATE,
        "pixels": _QWEN_PIXELS,
        "text": {**_TEXT, "rope_parameters": _MROPE},
        "vision": {
            "depth": 2,
            "embed_dim": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    },
    "qwen2_5_vl": {
        "specials": _QWEN_SPECIALS,
        "template": _QWEN_TEMPLATE,
        "pixels": _QWEN_PIXELS,
        "text": {**_TEXT, "rope_parameters": _MROPE},
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
    },
    "internvl": {
        "specials": _INTERNVL_SPECIALS,
        "template": _INTERNVL_TEMPLATE,
        "named_specials": _INTERNVL_NAMED,
        # 56 px tiles of 14 px patches, pixel-shuffled by 0.5: 4 image tokens per tile, <= 4 tiles + thumbnail.
        "tile": 56,
        "max_tiles": 4,
        "image_seq_length": 4,
        "text": {**_TEXT, "model_type": "qwen2"},
        "vision": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": [56, 56],
            "patch_size": [14, 14],
        },
    },
}
ARCHES: tuple[str, ...] = tuple(RECIPES)


def _check_arch(arch: str) -> dict[str, Any]:
    if arch not in RECIPES:
        raise ConfigError(f"tiny model architecture {arch!r} is not known; choose one of {list(ARCHES)}")
    return RECIPES[arch]


def train_tokenizer(
    special_tokens: Sequence[str],
    named_specials: dict[str, str] | None = None,
    corpus: Sequence[str] = CORPUS,
    vocab_size: int = TOKENIZER_VOCAB_SIZE,
):
    """A byte-level BPE (GPT-2/Qwen style) trained on ``corpus``, wrapped as a transformers fast tokenizer.

    ``special_tokens`` become single, never-split tokens; ``named_specials`` additionally
    become tokenizer attributes (``tokenizer.<name>`` and ``<name>_id``), which processors
    such as InternVL's look up.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) * CORPUS_REPEATS, trainer)
    end = "<|im_end|>" if "<|im_end|>" in special_tokens else special_tokens[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=end,
        pad_token=special_tokens[0],
        extra_special_tokens=dict(named_specials or {}),
    )


def _text_config(recipe: dict[str, Any], tokenizer) -> dict[str, Any]:
    vocab = tokenizer.get_vocab()
    return {
        **recipe["text"],
        "vocab_size": len(vocab),
        "initializer_range": _INIT_RANGE,
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _build_qwen(arch: str, recipe: dict[str, Any], tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision = {**recipe["vision"], "hidden_size": recipe["text"]["hidden_size"]}
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor

        vision = {**recipe["vision"], "out_hidden_size": recipe["text"]["hidden_size"]}
    vocab = tokenizer.get_vocab()
    config = Config(
        text_config=_text_config(recipe, tokenizer),
        vision_config={**vision, "initializer_range": _INIT_RANGE},
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    processor = Processor(
        image_processor=Qwen2VLImageProcessor(**recipe["pixels"]),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**recipe["pixels"]),
        chat_template=recipe["template"],
    )
    return Model(config), processor


def _build_internvl(recipe: dict[str, Any], tokenizer):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tile = {"height": recipe["tile"], "width": recipe["tile"]}
    config = InternVLConfig(
        text_config=_text_config(recipe, tokenizer),
        vision_config={**recipe["vision"], "initializer_range": _INIT_RANGE},
        image_token_id=tokenizer.get_vocab()["<IMG_CONTEXT>"],
        image_seq_length=recipe["image_seq_length"],
        downsample_ratio=0.5,
    )
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=tile, crop_to_patches=True, min_patches=1, max_patches=recipe["max_tiles"]
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=tile),
        image_seq_length=recipe["image_seq_length"],
        chat_template=recipe["template"],
    )
    return InternVLForConditionalGeneration(config), processor


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a loadable checkpoint folder (model + processor via ``save_pretrained``) to ``out_dir``.

    Same ``arch`` and ``seed`` give byte-identical weights. Writes in place: use
    :func:`ensure_tiny_model` for an atomic, cached build.
    """
    import torch

    recipe = _check_arch(arch)
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(recipe["specials"], recipe.get("named_specials"))
    # A private RNG state: building a model must not disturb the caller's torch seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "internvl":
            model, processor = _build_internvl(recipe, tokenizer)
        else:
            model, processor = _build_qwen(arch, recipe, tokenizer)
    model = model.to(torch.float32).eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_json(
        out_dir / MARKER_FILE,
        {
            "arch": arch,
            "seed": seed,
            "recipe_hash": recipe_hash(arch, seed),
            "note": "random weights for tests and demos; scores are meaningless",
        },
    )
    return out_dir


def recipe_hash(arch: str, seed: int = 0) -> str:
    import transformers

    return stable_hash(
        {
            "arch": arch,
            "seed": seed,
            "recipe": RECIPES[arch],
            "version": RECIPE_VERSION,
            "transformers": transformers.__version__,
            "corpus": CORPUS,
        }
    )


def tiny_cache_root() -> Path:
    root = os.environ.get("LEAF_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "leaf") / "tiny"


def parse_tiny_name(name: str) -> tuple[str, int]:
    """``tiny:<arch>`` or ``tiny:<arch>:<seed>`` -> (arch, seed)."""
    parts = name.split(":")
    if parts[0] != "tiny" or len(parts) not in (2, 3):
        raise ConfigError(f"model {name!r}: expected 'tiny:<arch>' or 'tiny:<arch>:<seed>'")
    _check_arch(parts[1])
    try:
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ConfigError(f"model {name!r}: the seed after the architecture must be an integer") from None
    return parts[1], seed


def ensure_tiny_model(arch: str, seed: int = 0, cache_root: str | Path | None = None) -> Path:
    """The cached checkpoint folder for (arch, seed), building it once if absent.

    The build goes to a temp folder beside the target and is renamed into place, so a
    reader never sees a half-written checkpoint; if a concurrent job won the race, its
    folder is kept and ours is discarded.
    """
    _check_arch(arch)
    root = Path(cache_root) if cache_root is not None else tiny_cache_root()
    target = root / f"{arch}-seed{seed}-{recipe_hash(arch, seed)}"
    if (target / MARKER_FILE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        build_tiny_model(arch, tmp, seed)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    from leaf_steps.core.cli import run_step

    def _main(args_list: Sequence[str] | None) -> None:
        parser = argparse.ArgumentParser(
            prog="python -m leaf_steps.teachers.tiny_models",
            description="Build a tiny random-weight VLM checkpoint (offline).",
        )
        parser.add_argument("--arch", required=True, choices=ARCHES)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", help="folder to write; default: the tiny-model cache ($LEAF_CACHE/tiny)")
        args = parser.parse_args(args_list)
        path = build_tiny_model(args.arch, args.out, args.seed) if args.out else ensure_tiny_model(args.arch, args.seed)
        print(path)

    run_step(_main, argv)


if __name__ == "__main__":
    main()
