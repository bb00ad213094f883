"""The one interface every teacher backend implements.

A teacher answers two questions through token log-likelihoods at one answer position:

* point: log-likelihoods of the five level words (``teacher_math.LEVELS``) for one image;
* pair: log-likelihoods of "A" and "B" for two images shown as A (first) then B.

Backends return :class:`~leaf_steps.teachers.teacher_math.LabelScores` per item, one per input,
in order. A failure for one item is a ``LabelScores`` with ``error`` set, never an
exception that loses the batch; only a failure to set the backend up at all raises
:class:`~leaf_steps.core.errors.TeacherError`.

Backends are picked by ``teachers.<name>.backend`` in the config and imported lazily
so that the base install needs neither vLLM nor a GPU.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leaf_steps.core.errors import ConfigError
from leaf_steps.core.io import stable_hash
from leaf_steps.teachers.teacher_math import LabelScores

BACKENDS: dict[str, str] = {
    "niqe": "leaf_steps.teachers.standin:NiqeTeacher",
    "transformers": "leaf_steps.teachers.hf:TransformersTeacher",
    "vllm": "leaf_steps.teachers.vllm:VllmTeacher",
}


@dataclass(frozen=True)
class ImageRef:
    image_id: str
    path: str


class Teacher(ABC):
    """Base class of teacher backends. Use as a context manager so resources are released."""

    backend: str = "?"

    def __init__(self, spec: dict[str, Any], prompts: dict[str, str]):
        self.spec = dict(spec)
        self.prompts = dict(prompts)

    @abstractmethod
    def score_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        """Five level log-likelihoods (Excellent..Bad) per image."""

    @abstractmethod
    def score_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        """("A", "B") log-likelihoods per pair; the first image is shown as A."""

    # Spec keys that change how a teacher is run, never what it answers. A score store keyed by
    # score_settings() must not miss because one of these changed.
    OPERATIONAL_KEYS: frozenset[str] = frozenset({
        "name", "gpus", "base_url", "api_key_env", "launch", "max_concurrency", "request_timeout_s",
        "max_retries", "backoff_s", "batch_size", "device"})
    # Keys that decide which answers are accepted as scores, not what was answered: a stored answer
    # stays valid when they change (the check is made again on reading it).
    ACCEPTANCE_KEYS: frozenset[str] = frozenset({"min_token_mass"})

    def score_settings(self) -> dict[str, Any]:
        """Everything besides the image and the prompt that changes this teacher's answer for an image.

        A store of teacher scores can key a score by (image bytes hash, prompt, hash of this dict):
        two teachers with equal score settings answer the same. Operational settings (endpoint,
        concurrency, timeouts, batch size, GPUs) are not in it. Backends override it to add what they
        resolve themselves (the dtype chosen for ``auto``, the processor arguments of a budget).
        """
        return {"backend": self.backend,
                **{k: v for k, v in sorted(self.spec.items())
                   if k not in self.OPERATIONAL_KEYS | self.ACCEPTANCE_KEYS | {"backend"}}}

    def operational_settings(self) -> dict[str, Any]:
        """How this teacher is run (recorded for the record, never part of a score's identity)."""
        return {k: v for k, v in sorted(self.spec.items()) if k in self.OPERATIONAL_KEYS - {"api_key_env", "name"}}

    def acceptance(self) -> dict[str, Any]:
        """The rules that turn an answer into an error row (``min_token_mass``)."""
        return {k: v for k, v in sorted(self.spec.items()) if k in self.ACCEPTANCE_KEYS}

    def facts(self) -> dict[str, Any]:
        """What the backend found out while setting up (versions, token checks): provenance only."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Provenance written into every teacher artifact: ``score_settings`` (and its hash, the key a
        score store uses), the ``acceptance`` rules, ``operational`` settings and the backend's ``facts``."""
        settings = self.score_settings()
        return {"backend": self.backend, "score_settings": settings, "score_settings_hash": stable_hash(settings),
                "acceptance": self.acceptance(), "operational": self.operational_settings(), **self.facts()}

    def close(self) -> None:
        """Release models, servers and connections."""

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_teacher(spec: dict[str, Any], prompts: dict[str, str]) -> Teacher:
    backend = spec.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"teachers.*.backend: unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    module_name, cls_name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(spec, prompts)
