"""The in-process transformers teacher: one batched forward pass, full next-token distribution.

For each item the chat is ``[image(s), prompt]`` rendered with the model's own chat
template and ``add_generation_prompt``, so the answer position is the last prompt token.
With left padding that position is the last column for every row of the batch, and the
model only has to produce logits there (``logits_to_keep=1``).

Token -> label mapping (paper Sec. 3.2 reads the probability of each answer word): a
label's probability is the sum over its spelling variants ("Good", " Good", "good",
" good", "GOOD", " GOOD") of the probability of each variant's FIRST token, deduplicated,
i.e. the logsumexp of their log-probabilities. The first token is what the model emits at
the answer position even when the tokenizer splits the word ("EXC" + "ELLENT"). Two
guards make this safe: a variant whose first token is bare whitespace or the unknown token
says nothing about which label is meant and is dropped, and the labels' first-token sets
must be disjoint (else a TeacherError names the colliding labels). The full vocabulary is
visible, so nothing is imputed: ``missing`` is always empty and ``mass`` is the total
probability of all the label tokens; a row whose mass is below ``min_token_mass`` is an error
row naming the tokens the model preferred (:func:`leaf_steps.teachers.teacher_math.require_mass`).

The chat text is rendered with ``enable_thinking`` (default false) passed to the chat template
(Qwen3-style templates then open the answer with an empty thinking block; templates that do not
read the variable ignore it, which ``describe()`` records), and a ``visual_budget`` reaches the
processor call as ``images_kwargs`` (:mod:`leaf_steps.teachers.visual_budget`). The model sees
decoded pixels (``image_bytes`` = ``pixels`` in the rows), by the same decoder as every stage.
"""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from leaf_steps.core.errors import ConfigError, InputError, TeacherError
from leaf_steps.teachers.base import ImageRef, Teacher
from leaf_steps.teachers.image_encoding import load_image
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS, TOP_SHOWN, LabelScores
from leaf_steps.teachers.visual_budget import parse_budget, transformers_images_kwargs

log = logging.getLogger("leaf.teachers.hf")


class _Torch:
    """torch, imported on first use: config validation reads this module's spec (TransformersSpec,
    parse_spec) without paying torch's import (seconds) at every workflow start."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("torch"), name)


torch = _Torch()


def _inference_mode(fn):
    """``@torch.inference_mode()``, entered at call time (see _Torch)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return fn(*args, **kwargs)

    return run


DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names (getattr(torch, name))
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TransformersSpec:
    """The validated ``teachers.<name>`` entry of a transformers teacher (defaults filled in)."""

    model: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    image_max_side: int | None = None
    trust_remote_code: bool = False
    missing_token_policy: str = "floor"  # accepted for symmetry with vLLM; nothing is ever missing here
    visual_budget: dict[str, int] | None = None  # null: the processor's own tiling / pixel limits
    enable_thinking: bool | None = False  # passed to the chat template; null: not passed
    min_token_mass: float = 0.5


# "backend" selects this class; "name" may be set by the caller to the teachers.<name> key
# so that error messages point at the exact config entry.
_META_KEYS = {"backend", "name", "gpus"}  # gpus: the scoring job's GPU resource


def parse_spec(spec: Mapping[str, Any]) -> TransformersSpec:
    name = spec.get("name") or "*"

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"teachers.{name}.{key}: {why}")

    fields = set(TransformersSpec.__dataclass_fields__)
    for key in spec:
        if key not in fields | _META_KEYS:
            raise bad(key, f"unknown key for the transformers backend; allowed: {sorted(fields | _META_KEYS)}")
    values = {k: v for k, v in spec.items() if k in fields}
    if not isinstance(values.get("model"), str) or not values["model"].strip():
        raise bad("model", "required: a local checkpoint folder, a hub id, or 'tiny:<arch>'")
    if values.get("revision") is not None and not isinstance(values["revision"], str):
        raise bad("revision", f"must be a string (branch, tag or commit), got {values['revision']!r}")
    if values.get("device", "auto") not in DEVICES:
        raise bad("device", f"must be one of {list(DEVICES)}, got {values['device']!r}")
    if values.get("dtype", "auto") not in (*DTYPES, "auto"):
        raise bad("dtype", f"must be one of {[*DTYPES, 'auto']}, got {values['dtype']!r}")
    batch_size = values.get("batch_size", 8)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise bad("batch_size", f"must be an integer >= 1, got {batch_size!r}")
    side = values.get("image_max_side")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 16):
        raise bad("image_max_side", f"must be an integer >= 16 or null, got {side!r}")
    if not isinstance(values.get("trust_remote_code", False), bool):
        raise bad("trust_remote_code", f"must be true or false, got {values['trust_remote_code']!r}")
    if values.get("missing_token_policy", "floor") not in ("floor", "zero"):
        raise bad("missing_token_policy", f"must be 'floor' or 'zero', got {values['missing_token_policy']!r}")
    parse_budget(values.get("visual_budget"), f"teachers.{name}.visual_budget")
    thinking = values.get("enable_thinking", False)
    if thinking is not None and not isinstance(thinking, bool):
        raise bad("enable_thinking", f"must be true, false or null, got {thinking!r}")
    mass = values.get("min_token_mass", 0.5)
    if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 <= mass <= 1:
        raise bad("min_token_mass", f"must be a number in [0, 1], got {mass!r}")
    return TransformersSpec(**values)


def _variants(label: str) -> list[str]:
    forms = dict.fromkeys([label, label.lower(), label.upper()])
    return [v for form in forms for v in (form, " " + form)]


def label_token_ids(tokenizer: Any, labels: Sequence[str], model_name: str) -> dict[str, list[int]]:
    """Label -> the deduplicated first-token ids of its spelling variants (see module doc).

    Raises TeacherError when a label has no usable variant or when two labels share a
    first token, since their probabilities could then not be told apart.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: dict[str, list[int]] = {}
    for label in labels:
        first: list[int] = []
        for variant in _variants(label):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if not encoded or encoded[0] == unk or not tokenizer.decode(encoded[:1]).strip():
                continue
            if encoded[0] not in first:
                first.append(encoded[0])
        if not first:
            raise TeacherError(
                f"{model_name}: the tokenizer cannot spell label {label!r} "
                f"(every variant starts with whitespace or the unknown token)"
            )
        ids[label] = first
    owner: dict[int, str] = {}
    for label, label_ids in ids.items():
        for token_id in label_ids:
            if token_id in owner:
                token = tokenizer.convert_ids_to_tokens(token_id)
                raise TeacherError(
                    f"{model_name}: labels {owner[token_id]!r} and {label!r} share the first token {token!r} "
                    f"(id {token_id}) for this tokenizer, so their probabilities cannot be told apart; "
                    f"use a model whose tokenizer separates them"
                )
            owner[token_id] = label
    return ids


def resolve_model(model: str) -> str:
    """``tiny:<arch>[:<seed>]`` -> the cached tiny checkpoint folder; anything else unchanged."""
    if model.startswith("tiny:"):
        from leaf_steps.teachers.tiny_models import ensure_tiny_model, parse_tiny_name

        return str(ensure_tiny_model(*parse_tiny_name(model)))
    return model


def _pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TeacherError("teachers.*.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def _pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # half precision on CPU is slow and, for some ops, unsupported


class TransformersTeacher(Teacher):
    """A vision-language model run in this process through ``AutoModelForImageTextToText``."""

    backend = "transformers"

    def __init__(self, spec: dict[str, Any], prompts: dict[str, str]):
        super().__init__(spec, prompts)
        self.settings = parse_spec(spec)
        for kind in ("point", "pair"):
            if not isinstance(prompts.get(kind), str) or not prompts[kind].strip():
                raise ConfigError(f"prompts.{kind}: required by the transformers teacher")
        self.device = _pick_device(self.settings.device)
        self.dtype = _pick_dtype(self.settings.dtype, self.device)
        self._where = f"teachers.{spec.get('name') or '*'}.visual_budget"
        self.budget = parse_budget(self.settings.visual_budget, self._where)
        self._loaded = False

    def setup(self) -> None:
        """Load the processor and model, find the label tokens, render the chat prompts (once)."""
        if self._loaded:
            return
        self.model_path = resolve_model(self.settings.model)
        self._load()
        self.images_kwargs = transformers_images_kwargs(
            self.budget, getattr(self.processor, "image_processor", None), self.settings.model, self._where
        )
        self.point_ids = label_token_ids(self.processor.tokenizer, LEVELS, self.settings.model)
        self.pair_ids = label_token_ids(self.processor.tokenizer, PAIR_LABELS, self.settings.model)
        self._check_ids_in_vocab()
        self.point_text = self._chat_text(self.prompts["point"], n_images=1)
        self.pair_text = self._chat_text(self.prompts["pair"], n_images=2)
        self._loaded = True

    # -- setup -------------------------------------------------------------------------
    def _load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        s = self.settings
        kwargs = {"revision": s.revision, "trust_remote_code": s.trust_remote_code}
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
            # safetensors only: a checkpoint folder is user-supplied, and a pickled .bin can run code when loaded.
            model = AutoModelForImageTextToText.from_pretrained(
                self.model_path, dtype=self.dtype, use_safetensors=True, **kwargs
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise TeacherError(
                f"teachers.*.model: cannot load {s.model!r} as an image-text-to-text model "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.model = model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise TeacherError(f"{s.model}: the processor has no tokenizer")
        # Left padding puts every row's answer position in the last column.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _check_ids_in_vocab(self) -> None:
        head = self.model.get_output_embeddings()
        n_vocab = head.weight.shape[0] if head is not None else None
        for token_id in [i for ids in (*self.point_ids.values(), *self.pair_ids.values()) for i in ids]:
            if n_vocab is not None and token_id >= n_vocab:
                raise TeacherError(
                    f"{self.settings.model}: label token id {token_id} is outside the model's "
                    f"output vocabulary ({n_vocab}); tokenizer and model do not match"
                )

    def _chat_text(self, prompt: str, n_images: int) -> str:
        messages = [
            {
                "role": "user",
                "content": [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": prompt}],
            }
        ]
        # Extra keyword arguments reach the template renderer (Qwen3's template reads enable_thinking).
        thinking = {} if self.settings.enable_thinking is None else {"enable_thinking": self.settings.enable_thinking}
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **thinking)
        except ValueError as exc:  # no chat template: a base (not instruction-tuned) checkpoint
            raise TeacherError(
                f"{self.settings.model}: cannot build the chat prompt ({exc}); "
                f"use an instruction-tuned checkpoint with a chat template"
            ) from exc

    # -- scoring -----------------------------------------------------------------------
    def answer_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        self.setup()
        return self._score([[ref] for ref in images], self.point_text, self.point_ids)

    def answer_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        self.setup()
        return self._score([[a, b] for a, b in pairs], self.pair_text, self.pair_ids)

    def _score(self, items: list[list[ImageRef]], text: str, label_ids: dict[str, list[int]]) -> list[LabelScores]:
        labels = list(label_ids)
        results: list[LabelScores | None] = [None] * len(items)
        loaded: list[tuple[int, list[Image.Image]]] = []
        for i, refs in enumerate(items):
            try:
                loaded.append((i, [load_image(ref.path, self.settings.image_max_side) for ref in refs]))
            except InputError as exc:
                results[i] = LabelScores.failed(labels, str(exc))
        size = self.settings.batch_size
        for start in range(0, len(loaded), size):
            chunk = loaded[start : start + size]
            try:
                scores = self._forward([imgs for _, imgs in chunk], text, label_ids)
            except (RuntimeError, ValueError) as exc:
                if len(chunk) == 1:
                    paths = ", ".join(ref.path for ref in items[chunk[0][0]])
                    scores = [LabelScores.failed(labels, f"{paths}: scoring failed ({type(exc).__name__}: {exc})")]
                else:
                    # One bad item (an extreme aspect ratio, say) or memory pressure: retry one by one
                    # so that only the culprit becomes an error row.
                    log.warning("batch of %d failed (%s); retrying one item at a time", len(chunk), exc)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    scores = [self._score([items[i]], text, label_ids)[0] for i, _ in chunk]
            for (i, _), score in zip(chunk, scores):
                results[i] = score
        return results  # type: ignore[return-value]

    def encode(self, images: list[list[Image.Image]], text: str):
        """Processor inputs for one batch: the same chat text per row, each row's images, left padding."""
        budget = {"images_kwargs": self.images_kwargs} if self.images_kwargs else {}
        inputs = self.processor(text=[text] * len(images), images=images, padding=True, return_tensors="pt", **budget)
        inputs = inputs.to(self.device)
        for key, value in inputs.items():
            if torch.is_tensor(value) and torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)  # pixel values must match the weights
        return inputs

    @_inference_mode
    def _forward(
        self, images: list[list[Image.Image]], text: str, label_ids: dict[str, list[int]]
    ) -> list[LabelScores]:
        inputs = self.encode(images, text)
        if not bool(inputs["attention_mask"][:, -1].all()):
            raise TeacherError(f"{self.settings.model}: expected left padding; the answer position is not last")
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        logits = self.model(**inputs, **extra).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        per_label = torch.stack([torch.logsumexp(logprobs[:, ids], dim=-1) for ids in label_ids.values()], dim=-1)
        all_ids = [i for ids in label_ids.values() for i in ids]
        mass = torch.logsumexp(logprobs[:, all_ids], dim=-1).exp()
        top_lp, top_ids = torch.topk(logprobs, k=min(TOP_SHOWN, logprobs.shape[-1]), dim=-1)
        out = []
        for row, m, lps, ids, imgs in zip(
            per_label.cpu().tolist(), mass.cpu().tolist(), top_lp.cpu().tolist(), top_ids.cpu().tolist(), images
        ):
            top = [(self.processor.tokenizer.decode([i]), lp) for i, lp in zip(ids, lps)]
            # As answered: the acceptance check (min_token_mass) is the caller's (Teacher.accept).
            out.append(
                LabelScores(
                    logliks=[float(x) for x in row],
                    mass=float(m),
                    missing=[],
                    top=top,
                    image_bytes=["pixels"] * len(imgs),
                )
            )
        return out

    # -- bookkeeping ---------------------------------------------------------------------
    def score_settings(self) -> dict[str, Any]:
        """Known without loading the model (the score store's key is looked up before anything is loaded):
        the processor arguments of a budget follow from (budget, model), the commit from (model, revision);
        both are recorded in facts() once loaded. Pin ``revision`` to a commit for a hub model: an unpinned
        id is keyed by its name, whatever the hub serves later."""
        s = self.settings
        return {
            "backend": self.backend,
            "model": s.model,
            "revision": s.revision,
            "dtype": str(self.dtype).removeprefix("torch."),  # resolved: "auto" differs by device
            "image_max_side": s.image_max_side,
            "image_bytes": "pixels",  # decoded by leaf_steps.images, never re-encoded
            "visual_budget": self.budget.describe() if self.budget else None,
            "enable_thinking": s.enable_thinking,
            "trust_remote_code": s.trust_remote_code,
        }

    def acceptance(self) -> dict[str, Any]:
        return {"min_token_mass": self.settings.min_token_mass}

    def operational_settings(self) -> dict[str, Any]:
        return {"device": str(self.device), "batch_size": self.settings.batch_size}

    def facts(self) -> dict[str, Any]:
        if not self._loaded:
            return {"loaded": False}
        import transformers

        tokenizer = self.processor.tokenizer

        def with_tokens(ids: dict[str, list[int]]) -> dict[str, dict[str, list[Any]]]:
            return {
                label: {"ids": list(v), "tokens": tokenizer.convert_ids_to_tokens(list(v))} for label, v in ids.items()
            }

        template = getattr(self.processor, "chat_template", None) or getattr(tokenizer, "chat_template", None) or ""
        return {
            "model_path": self.model_path,
            "model_class": type(self.model).__name__,
            "commit": getattr(self.model.config, "_commit_hash", None),
            "processor_images_kwargs": self.images_kwargs,
            "label_token_ids": {"point": with_tokens(self.point_ids), "pair": with_tokens(self.pair_ids)},
            # Whether enable_thinking can have any effect: a template that never reads it ignores it.
            "template_reads_enable_thinking": "enable_thinking" in str(template),
            "transformers": transformers.__version__,
        }

    def close(self) -> None:
        for attr in ("model", "processor"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._loaded = False
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
