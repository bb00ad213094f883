"""The one interface every teacher backend implements.

A teacher answers two questions through token log-likelihoods at one answer position:

* point: log-likelihoods of the five level words (``teacher_math.LEVELS``) for one image;
* pair: log-likelihoods of "A" and "B" for two images shown as A (first) then B.

Backends implement ``answer_points`` / ``answer_pairs``: one
:class:`~leaf_steps.teachers.teacher_math.LabelScores` per item, in order, as the model answered (these are
what the score store keeps, :mod:`leaf_steps.teachers.store`). ``score_points`` / ``score_pairs`` add
the acceptance check (``min_token_mass``: an answer whose label tokens held too little probability is
an error row). A failure for one item is a ``LabelScores`` with ``error`` set, never an exception
that loses the batch; only a failure to set the backend up at all raises
:class:`~leaf_steps.core.errors.TeacherError`.

Constructing a teacher only validates its settings, so that ``score_settings()`` (the store's key)
costs nothing; the model is loaded or the server launched on first use or on entering the context
(``with make_teacher(...) as teacher``), so a job whose answers are all stored never starts it.

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
from leaf_steps.teachers.serve_args import answer_serve_args
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS, LabelScores, require_mass

BACKENDS: dict[str, str] = {
    "niqe": "leaf_steps.teachers.standin:NiqeTeacher",
    "transformers": "leaf_steps.teachers.hf:TransformersTeacher",
    "vllm": "leaf_steps.teachers.vllm:VllmTeacher",
}


# Spec keys that change how a teacher is run, never what it answers. A score store keyed by
# score_settings() must not miss because one of these changed, and the scoring rules do not track them.
OPERATIONAL_KEYS: frozenset[str] = frozenset(
    {
        "name",
        "gpus",
        "base_url",
        "api_key_env",
        "launch",
        "max_concurrency",
        "request_timeout_s",
        "max_retries",
        "backoff_s",
        "batch_size",
        "device",
    }
)
# Per backend: keys that reach the answers through an input file the rule tracks (the NIQE model).
BACKEND_OPERATIONAL_KEYS: dict[str, frozenset[str]] = {"niqe": frozenset({"model_path", "pristine_dir"})}
# Keys that decide which answers are accepted as scores, not what was answered: a stored answer
# stays valid when they change (the check is made again on reading it).
ACCEPTANCE_KEYS: frozenset[str] = frozenset({"min_token_mass"})


@dataclass(frozen=True)
class ImageRef:
    image_id: str
    path: str


class Teacher(ABC):
    """Base class of teacher backends. Use as a context manager so resources are released."""

    backend: str = "?"
    # False for a teacher whose answers do not depend on the prompts (the NIQE stand-in): the prompts are
    # then no part of its score store key, and editing them rescores nothing.
    reads_prompts: bool = True

    def __init__(self, spec: dict[str, Any], prompts: dict[str, str]):
        self.spec = dict(spec)
        self.prompts = dict(prompts)

    @abstractmethod
    def answer_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        """Five level log-likelihoods (Excellent..Bad) per image, as answered (no acceptance check)."""

    @abstractmethod
    def answer_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        """("A", "B") log-likelihoods per pair, as answered; the first image is shown as A."""

    def accept(self, scores: LabelScores, labels: Sequence[str]) -> LabelScores:
        """An answer as a score, or an error row when its label tokens held less than ``min_token_mass``."""
        threshold = self.acceptance().get("min_token_mass")
        return scores if threshold is None else require_mass(scores, labels, threshold)

    def score_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        """:meth:`answer_points` with the acceptance check."""
        return [self.accept(s, LEVELS) for s in self.answer_points(images)]

    def score_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        """:meth:`answer_pairs` with the acceptance check."""
        return [self.accept(s, PAIR_LABELS) for s in self.answer_pairs(pairs)]

    def setup(self) -> None:  # noqa: B027 (a no-op unless the backend needs one)
        """Load the model / start the server (backends that need it); idempotent, called on first use."""

    def prompt_for(self, kind: str) -> str | None:
        """The prompt a request of ``kind`` ("point" or "pair") carries; None for a teacher that reads none."""
        return self.prompts.get(kind) if self.reads_prompts else None

    OPERATIONAL_KEYS: frozenset[str] = OPERATIONAL_KEYS
    ACCEPTANCE_KEYS: frozenset[str] = ACCEPTANCE_KEYS

    def score_settings(self) -> dict[str, Any]:
        """Everything besides the image and the prompt that changes this teacher's answer for an image.

        A store of teacher scores can key a score by (image bytes hash, prompt, hash of this dict):
        two teachers with equal score settings answer the same. Operational settings (endpoint,
        concurrency, timeouts, batch size, GPUs) are not in it. Backends override it to add what they
        resolve themselves (the dtype chosen for ``auto``, the processor arguments of a budget).
        """
        return {
            "backend": self.backend,
            **{
                k: v
                for k, v in sorted(self.spec.items())
                if k not in self.OPERATIONAL_KEYS | self.ACCEPTANCE_KEYS | {"backend"}
            },
        }

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
        return {
            "backend": self.backend,
            "score_settings": settings,
            "score_settings_hash": stable_hash(settings),
            "acceptance": self.acceptance(),
            "operational": self.operational_settings(),
            **self.facts(),
        }

    def close(self) -> None:  # noqa: B027 (a no-op unless the backend holds something)
        """Release models, servers and connections."""

    def __enter__(self) -> Teacher:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_spec(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A ``teachers.<name>`` block cut into what changes the answers (``score``: the scoring rules' tracked
    params), the acceptance rules (``acceptance``: the assembling rules' params) and how the teacher is run
    (``operational``: never tracked, never part of the store key).

    A launched vLLM server's ``launch.args`` may change answers (``--dtype``, ``--quantization``,
    ``--revision``, ...): those not known to be operational stay in ``score`` as ``serve_args``
    (:func:`leaf_steps.teachers.serve_args.answer_serve_args`)."""
    backend = spec.get("backend")
    operational_keys = OPERATIONAL_KEYS | BACKEND_OPERATIONAL_KEYS.get(backend, frozenset())
    score = {k: v for k, v in spec.items() if k not in operational_keys | ACCEPTANCE_KEYS}
    if backend == "vllm":
        serve_args = answer_serve_args((spec.get("launch") or {}).get("args") or [])
        if serve_args:
            score["serve_args"] = serve_args
    return {
        "score": score,
        "acceptance": {k: spec[k] for k in sorted(ACCEPTANCE_KEYS) if k in spec},
        "operational": {k: v for k, v in spec.items() if k in operational_keys},
    }


def backend_class(backend: str | None) -> type[Teacher]:
    """The Teacher class of a backend name (imported on first use)."""
    if backend not in BACKENDS:
        raise ConfigError(f"teachers.*.backend: unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    module_name, cls_name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def make_teacher(spec: dict[str, Any], prompts: dict[str, str]) -> Teacher:
    """A teacher for ``spec``; it validates its settings, loads nothing (see :meth:`Teacher.setup`)."""
    return backend_class(spec.get("backend"))(spec, prompts)
