"""The one interface every teacher backend implements.

A teacher answers two questions through token log-likelihoods at one answer position:

* point: log-likelihoods of the five level words (``teacher_math.LEVELS``) for one image;
* pair: log-likelihoods of "A" and "B" for two images shown as A (first) then B.

Backends return :class:`~leaf_steps.teacher_math.LabelScores` per item, one per input,
in order. A failure for one item is a ``LabelScores`` with ``error`` set, never an
exception that loses the batch; only a failure to set the backend up at all raises
:class:`~leaf_steps.errors.TeacherError`.

Backends are picked by ``teachers.<name>.backend`` in the config and imported lazily
so that the base install needs neither vLLM nor a GPU.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leaf_steps.errors import ConfigError
from leaf_steps.teacher_math import LabelScores

BACKENDS: dict[str, str] = {
    "niqe": "leaf_steps.teachers.niqe:NiqeTeacher",
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

    def describe(self) -> dict[str, Any]:
        """Provenance written into every teacher artifact (model, backend, sampling settings)."""
        return {"backend": self.backend, **{k: v for k, v in self.spec.items() if k != "api_key_env"}}

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
