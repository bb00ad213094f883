"""The MLLM teacher served by vLLM's OpenAI-compatible API (``backend: vllm``).

One request per item: a single user message whose content is the image(s) as
``data:`` URLs followed by the prompt (point: one image; pair: A then B), with
``logprobs: true, top_logprobs: K, max_tokens: 1, temperature: 0``, the chat template
asked for non-thinking mode (``chat_template_kwargs: {"enable_thinking": false}``) and,
when the teacher has a ``visual_budget``, the processor's per-request limits
(``mm_processor_kwargs``). Images go as the file's own bytes when they can
(:mod:`leaf_steps.teachers.image_encoding`). The answer is read at
``choices[0].logprobs.content[0].top_logprobs`` and mapped to labels by
:func:`leaf_steps.teachers.teacher_math.collapse_top_logprobs` (space/case variants summed,
labels absent from the top K imputed and listed, matched mass recorded); an answer whose
label tokens hold less than ``min_token_mass`` of the probability is an error row naming
what the model said instead (:func:`leaf_steps.teachers.teacher_math.require_mass`).

Requests run concurrently (``max_concurrency`` workers, each with its own
``httpx.AsyncClient`` connection) with a per-request timeout and retries with
exponential backoff and jitter on 408, 429, 500, 502-504, timeouts and connection
errors. Whatever still fails becomes a ``LabelScores.failed`` row with the reason; a
batch is never lost to one item, and a server that is down for the whole batch yields
a batch of error rows (the scoring driver decides how many failures are too many).

``base_url`` names a running server; when it is null the teacher launches
``vllm serve`` itself (:mod:`leaf_steps.teachers.vllm_server`) on first use and stops
it on :meth:`close`. The API key is read from the environment variable named by
``api_key_env``; it is sent as a Bearer header and written nowhere else.
See docs/teacher_vllm.md for the GPU-host guide.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import random
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from leaf_steps.core.errors import ConfigError, InputError, TeacherError
from leaf_steps.teachers.base import ImageRef, Teacher
from leaf_steps.teachers.image_encoding import TRANSPORTS, EncodingSettings, image_data_url
from leaf_steps.teachers.serve_args import answer_serve_args
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS, LabelScores, collapse_top_logprobs, label_aliases
from leaf_steps.teachers.visual_budget import PROCESSOR_KEYS, parse_budget, vllm_processor_kwargs
from leaf_steps.teachers.vllm_server import VllmServer

log = logging.getLogger(__name__)

REQUIRED = object()
SPEC_DEFAULTS: dict[str, Any] = {
    "backend": "vllm",
    "name": None,  # the teacher's key under `teachers`, used in error messages (set by the driver)
    "gpus": 0,  # GPUs the scoring job is given (pipeline resource); launched mode's default tensor parallelism
    "model": REQUIRED,
    "base_url": None,  # e.g. http://gpu-node:8000/v1; null = launch `vllm serve` here
    "api_key_env": None,  # NAME of the environment variable holding the key
    "launch": {},
    "top_logprobs": 20,
    "max_concurrency": 32,
    "request_timeout_s": 120.0,
    "max_retries": 3,
    "backoff_s": 1.0,
    "image_max_side": 1024,
    "image_transport": "auto",  # auto: the file's bytes when they fit, else lossless PNG | png | jpeg
    "image_quality": 90,  # jpeg transport only
    "visual_budget": None,  # null: the model's own tiling / pixel limits (see teachers/visual_budget.py)
    "enable_thinking": False,  # chat_template_kwargs.enable_thinking; null: send nothing
    "temperature": 0.0,
    "max_tokens": 1,
    "extra_body": {},
    "missing_token_policy": "floor",
    "min_token_mass": 0.5,
    "check_label_tokens": True,
}
LAUNCH_DEFAULTS: dict[str, Any] = {
    "executable": "vllm",
    "host": "127.0.0.1",
    "port": None,  # null: a free port
    "tensor_parallel_size": None,  # null: the teacher's `gpus` (at least 1)
    "gpu_ids": None,  # e.g. [0, 1] -> CUDA_VISIBLE_DEVICES=0,1; null: leave it as the scheduler set it
    "max_model_len": None,
    "trust_remote_code": False,
    "args": [],  # extra `vllm serve` arguments, e.g. ["--gpu-memory-utilization", "0.9"]
    "startup_timeout_s": 1800.0,
    "log_file": None,  # null: a file in the temp dir (its path is logged and shown on errors)
}
# Request fields the teacher sets itself; extra_body may not override them.
MANAGED_FIELDS = {
    "model",
    "messages",
    "logprobs",
    "top_logprobs",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "n",
    "stream",
}
# Fields extra_body may extend but not override in the keys the teacher sets (dedicated keys exist).
MERGED_FIELDS = {
    "chat_template_kwargs": ({"enable_thinking"}, "enable_thinking"),
    "mm_processor_kwargs": (PROCESSOR_KEYS, "visual_budget"),
}
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# httpcore's pool rescans every (queued request, connection) pair on each event, which
# costs milliseconds per request at 32 connections; several small pools avoid that.
CONNECTIONS_PER_CLIENT = 1
MAX_BACKOFF_S = 60.0
# An answer is a few KB (one token, top_logprobs <= a few dozen); a body past this is no answer and is
# refused while it streams in, so that a broken server or proxy cannot exhaust the job's memory.
MAX_RESPONSE_BYTES = 8 << 20


class RequestFailed(Exception):
    """One item's request failed for good; the message goes into its error row."""


class ResponseTooLarge(Exception):
    """The body passed MAX_RESPONSE_BYTES while it streamed in."""


async def read_bounded(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], limit: int = MAX_RESPONSE_BYTES
) -> tuple[httpx.Response, bytes]:
    """POST and read the (decoded) body, refusing it as soon as it passes ``limit`` bytes; the caller bounds
    the time (a body that streams forever is then a timeout, never a hang)."""
    async with client.stream("POST", url, json=payload) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise ResponseTooLarge(
                    f"the answer passed {limit:,} bytes and was refused (a chat completion of one token is a few KB)"
                )
        return response, bytes(body)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Spec with defaults filled; ConfigError naming ``teachers.<name>.<key>`` for anything wrong."""
    name = spec.get("name") or "<vllm teacher>"

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"teachers.{name}.{key}: {message}")

    unknown = sorted(set(spec) - set(SPEC_DEFAULTS))
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(SPEC_DEFAULTS))})")
    s = {**SPEC_DEFAULTS, **spec}
    if s["backend"] != "vllm":
        raise fail("backend", f"expected 'vllm', got {s['backend']!r}")
    if s["model"] is REQUIRED or not isinstance(s["model"], str) or not s["model"]:
        raise fail("model", "required: the served model id, e.g. OpenGVLab/InternVL3_5-8B")
    if s["base_url"] is not None:
        url = s["base_url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise fail("base_url", f"must be an http(s) URL such as http://host:8000/v1, got {url!r}")
        url = url.rstrip("/")
        s["base_url"] = url if url.endswith("/v1") else url + "/v1"
        if spec.get("launch"):
            raise fail("launch", "only used when base_url is null (the teacher launches vllm serve itself)")
    if s["api_key_env"] is not None and (not isinstance(s["api_key_env"], str) or not s["api_key_env"]):
        raise fail("api_key_env", "must be the NAME of an environment variable (the key itself never goes in config)")
    for key, minimum in (
        ("top_logprobs", 1),
        ("max_concurrency", 1),
        ("max_retries", 0),
        ("max_tokens", 1),
        ("image_max_side", 16),
        ("gpus", 0),
    ):
        if not _is_int(s[key]) or s[key] < minimum:
            raise fail(key, f"must be an integer >= {minimum}, got {s[key]!r}")
    for key in ("request_timeout_s", "backoff_s", "temperature"):
        if not _is_number(s[key]) or s[key] < 0 or (key == "request_timeout_s" and s[key] == 0):
            raise fail(
                key, f"must be a {'positive' if key == 'request_timeout_s' else 'non-negative'} number, got {s[key]!r}"
            )
    if s["image_transport"] not in TRANSPORTS:
        raise fail("image_transport", f"must be one of {list(TRANSPORTS)}, got {s['image_transport']!r}")
    if not _is_int(s["image_quality"]) or not 1 <= s["image_quality"] <= 100:
        raise fail("image_quality", f"must be an integer in 1..100, got {s['image_quality']!r}")
    s["_budget"] = parse_budget(s["visual_budget"], f"teachers.{name}.visual_budget")
    s["_mm_processor_kwargs"] = vllm_processor_kwargs(s["_budget"], s["model"], f"teachers.{name}.visual_budget")
    if s["enable_thinking"] is not None and not isinstance(s["enable_thinking"], bool):
        raise fail("enable_thinking", f"must be true, false or null, got {s['enable_thinking']!r}")
    if not _is_number(s["min_token_mass"]) or not 0 <= s["min_token_mass"] <= 1:
        raise fail("min_token_mass", f"must be a number in [0, 1], got {s['min_token_mass']!r}")
    if s["missing_token_policy"] not in ("floor", "zero"):
        raise fail("missing_token_policy", f"must be 'floor' or 'zero', got {s['missing_token_policy']!r}")
    if not isinstance(s["check_label_tokens"], bool):
        raise fail("check_label_tokens", f"must be true or false, got {s['check_label_tokens']!r}")
    if not isinstance(s["extra_body"], dict):
        raise fail("extra_body", f"must be a mapping of extra request fields, got {type(s['extra_body']).__name__}")
    clash = sorted(set(s["extra_body"]) & MANAGED_FIELDS)
    if clash:
        raise fail(f"extra_body.{clash[0]}", "is set by the teacher itself; use the dedicated key instead")
    for field, (owned, key) in MERGED_FIELDS.items():
        extra = s["extra_body"].get(field, {})
        if not isinstance(extra, dict):
            raise fail(f"extra_body.{field}", f"must be a mapping, got {type(extra).__name__}")
        taken = sorted(set(extra) & owned)
        if taken:
            raise fail(f"extra_body.{field}.{taken[0]}", f"is set through teachers.{name}.{key}; use that key")
    s["launch"] = _validate_launch(s["launch"], s, fail)
    return s


def _validate_launch(launch: Any, s: dict[str, Any], fail: Any) -> dict[str, Any]:
    if not isinstance(launch, dict):
        raise fail("launch", f"must be a mapping, got {type(launch).__name__}")
    unknown = sorted(set(launch) - set(LAUNCH_DEFAULTS))
    if unknown:
        raise fail(f"launch.{unknown[0]}", f"unknown key (known: {', '.join(sorted(LAUNCH_DEFAULTS))})")
    lc = {**LAUNCH_DEFAULTS, **launch}
    if lc["tensor_parallel_size"] is None:
        lc["tensor_parallel_size"] = max(1, s["gpus"])
    if not _is_int(lc["tensor_parallel_size"]) or lc["tensor_parallel_size"] < 1:
        raise fail("launch.tensor_parallel_size", f"must be an integer >= 1, got {lc['tensor_parallel_size']!r}")
    if s["gpus"] and lc["tensor_parallel_size"] > s["gpus"]:
        raise fail(
            "launch.tensor_parallel_size",
            f"{lc['tensor_parallel_size']} exceeds the {s['gpus']} GPU(s) "
            f"the job is given (teachers.{s['name'] or '<name>'}.gpus)",
        )
    if lc["port"] is not None and (not _is_int(lc["port"]) or not 0 < lc["port"] < 65536):
        raise fail("launch.port", f"must be a TCP port number or null, got {lc['port']!r}")
    if lc["max_model_len"] is not None and (not _is_int(lc["max_model_len"]) or lc["max_model_len"] < 1):
        raise fail("launch.max_model_len", f"must be a positive integer or null, got {lc['max_model_len']!r}")
    if not _is_number(lc["startup_timeout_s"]) or lc["startup_timeout_s"] <= 0:
        raise fail("launch.startup_timeout_s", f"must be a positive number, got {lc['startup_timeout_s']!r}")
    if not isinstance(lc["args"], list) or not all(isinstance(a, str) for a in lc["args"]):
        raise fail("launch.args", "must be a list of strings (extra `vllm serve` arguments)")
    if not isinstance(lc["trust_remote_code"], bool):
        raise fail("launch.trust_remote_code", f"must be true or false, got {lc['trust_remote_code']!r}")
    if not isinstance(lc["executable"], str) or not lc["executable"]:
        raise fail("launch.executable", "must be a command name or path")
    if not isinstance(lc["host"], str) or not lc["host"]:
        raise fail("launch.host", "must be a host name or address")
    if lc["log_file"] is not None and not isinstance(lc["log_file"], str):
        raise fail("launch.log_file", "must be a path or null")
    ids = lc["gpu_ids"]
    if ids is not None:
        if not isinstance(ids, list) or not ids or not all(_is_int(g) and g >= 0 for g in ids):
            raise fail("launch.gpu_ids", f"must be a non-empty list of GPU indices or null, got {ids!r}")
        if len(ids) < lc["tensor_parallel_size"]:
            raise fail(
                "launch.gpu_ids", f"{len(ids)} GPU(s) listed for tensor_parallel_size={lc['tensor_parallel_size']}"
            )
    if any(a.split("=")[0] in ("--max-logprobs", "--port", "--limit-mm-per-prompt") for a in lc["args"]):
        raise fail(
            "launch.args",
            "--max-logprobs, --port and --limit-mm-per-prompt are set by the teacher "
            "(top_logprobs, launch.port, two images per pair prompt)",
        )
    return lc


def request_extras(settings: dict[str, Any]) -> dict[str, Any]:
    """The non-OpenAI fields of every request: extra_body, merged with the thinking mode
    (``chat_template_kwargs``, vllm/entrypoints/openai/chat_completion/protocol.py: passed to the chat
    template renderer) and the visual budget (``mm_processor_kwargs``: passed to the HF processor)."""
    extras = dict(settings["extra_body"])
    if settings["enable_thinking"] is not None:
        extras["chat_template_kwargs"] = {
            **extras.get("chat_template_kwargs", {}),
            "enable_thinking": settings["enable_thinking"],
        }
    if settings["_mm_processor_kwargs"]:
        extras["mm_processor_kwargs"] = {**extras.get("mm_processor_kwargs", {}), **settings["_mm_processor_kwargs"]}
    return extras


def chat_payload(model: str, data_urls: Sequence[str], prompt: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request for one item: images first (A then B), then the prompt."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in data_urls]
    content.append({"type": "text", "text": prompt})
    return {
        **request_extras(settings),
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "logprobs": True,
        "top_logprobs": settings["top_logprobs"],
        "max_tokens": settings["max_tokens"],
        "temperature": settings["temperature"],
    }


def parse_top_logprobs(body: Any) -> list[tuple[str, float]]:
    """``(token, logprob)`` candidates at the first answer position of a chat-completions body.

    Raises ValueError with a message fit for an error row when the body lacks them.
    """
    try:
        content = body["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("response has no choices[0].logprobs.content (did the server ignore logprobs=true?)") from None
    if not isinstance(content, list) or not content:
        raise ValueError("response has an empty choices[0].logprobs.content (no answer token)")
    top = content[0].get("top_logprobs") if isinstance(content[0], dict) else None
    if not isinstance(top, list) or not top:
        raise ValueError("response has no top_logprobs at the answer position (top_logprobs=0 or capped?)")
    out = []
    for entry in top:
        try:
            token, logprob = entry["token"], float(entry["logprob"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"malformed top_logprobs entry {entry!r}") from None
        if not isinstance(token, str):
            raise ValueError(f"malformed top_logprobs entry {entry!r}")
        out.append((token, logprob))
    return out


def server_error_text(response: httpx.Response) -> str:
    """The message of a vLLM error body ({"error": {"message": ...}} or older flat forms)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        if isinstance(err, str):
            return err[:300]
    return str(body)[:300]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs 0.1-0.2 s per client; every client of the process shares one.
    return httpx.create_ssl_context()


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class VllmTeacher(Teacher):
    backend = "vllm"

    def __init__(self, spec: dict[str, Any], prompts: dict[str, str]):
        super().__init__(spec, prompts)
        self.settings = validate_spec(self.spec)
        self._name = self.settings["name"] or "<vllm teacher>"
        for kind in ("point", "pair"):
            if not isinstance(self.prompts.get(kind), str) or not self.prompts[kind]:
                raise ConfigError(f"prompts.{kind}: required by the vllm teacher")
        self._api_key = self._read_api_key()
        self.encoding = EncodingSettings(
            max_side=self.settings["image_max_side"],
            transport=self.settings["image_transport"],
            quality=self.settings["image_quality"],
        )
        self._aliases = {LEVELS: label_aliases(LEVELS), PAIR_LABELS: label_aliases(PAIR_LABELS)}
        self._label_tokens: dict[str, Any] = {"status": "not checked"}
        self._server: VllmServer | None = None
        self._base_url: str | None = self.settings["base_url"]
        self._ready = False
        # Set once an item gave up on a connection error; later connection errors then fail at
        # once instead of each waiting through its retries (cleared by the next success).
        self._unreachable = False

    # -- set-up
    def _read_api_key(self) -> str | None:
        env = self.settings["api_key_env"]
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            raise ConfigError(f"teachers.{self._name}.api_key_env: environment variable {env} is not set or empty")
        return key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    @property
    def base_url(self) -> str | None:
        return self._base_url

    @property
    def server(self) -> VllmServer | None:
        """The launched server while it runs (launched mode), else None."""
        return self._server

    @property
    def root_url(self) -> str:
        assert self._base_url is not None
        return self._base_url[: -len("/v1")]

    def _ensure_ready(self) -> None:
        """Launch the server if needed and check it once (model served, answer tokens distinct)."""
        if self._ready:
            return
        if self._base_url is None:
            lc = self.settings["launch"]
            server = VllmServer(
                self.settings["model"],
                executable=lc["executable"],
                host=lc["host"],
                port=lc["port"],
                max_logprobs=self.settings["top_logprobs"],
                images_per_prompt=2,
                tensor_parallel_size=lc["tensor_parallel_size"],
                gpus=lc["gpu_ids"],
                max_model_len=lc["max_model_len"],
                trust_remote_code=lc["trust_remote_code"],
                extra_args=lc["args"],
                startup_timeout_s=lc["startup_timeout_s"],
                log_file=lc["log_file"],
                api_key=self._api_key,
            )
            self._server = server.start()  # a server that fails to start is stopped by start()
            self._base_url = server.base_url
        try:
            with httpx.Client(
                timeout=min(30.0, self.settings["request_timeout_s"]), headers=self._headers(), verify=_ssl_context()
            ) as client:
                answered = self._check_model(client)
                if answered and self.settings["check_label_tokens"]:
                    self._check_label_tokens(client)
        except BaseException:
            self.close()  # e.g. the model is not served: do not leave a launched server behind
            raise
        self._ready = answered  # a server that was down is checked again before the next batch

    def _check_model(self, client: httpx.Client) -> bool:
        """True when the server answered; a server that is down is left to the per-item errors."""
        try:
            r = client.get(f"{self._base_url}/models")
        except httpx.TransportError as exc:
            log.warning("vLLM server at %s not reachable (%s); items will fail with errors", self._base_url, exc)
            return False
        if r.status_code == 401:
            hint = (
                f"the key in ${self.settings['api_key_env']}"
                if self._api_key
                else f"no key was sent (set teachers.{self._name}.api_key_env)"
            )
            raise TeacherError(f"vLLM server at {self._base_url} rejected the request (401 Unauthorized): {hint}")
        if r.status_code != 200:
            log.warning("GET %s/models answered %s; not checking the model id", self._base_url, r.status_code)
            return True
        try:
            served = [m["id"] for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError):
            log.warning("GET %s/models returned an unexpected body; not checking the model id", self._base_url)
            return True
        if self.settings["model"] not in served:
            raise ConfigError(
                f"teachers.{self._name}.model: {self.settings['model']!r} is not served at "
                f"{self._base_url} (served: {served})"
            )
        return True

    def _check_label_tokens(self, client: httpx.Client) -> None:
        """Ask vLLM's /tokenize for each label's first token (bare and after a space).

        A tokenizer that splits "Excellent" answers "Excel": the first token then counts
        for the label. If two labels share a first token the scores would be
        meaningless, so that is a TeacherError; a server without /tokenize is recorded.
        """
        found: dict[str, list[str]] = {}
        for label in LEVELS + PAIR_LABELS:
            pieces = set()
            for text in (label, " " + label):
                try:
                    r = client.post(
                        f"{self.root_url}/tokenize",
                        json={
                            "model": self.settings["model"],
                            "prompt": text,
                            "add_special_tokens": False,
                            "return_token_strs": True,
                        },
                    )
                    strs = r.json().get("token_strs") if r.status_code == 200 else None
                except (httpx.TransportError, ValueError, AttributeError):
                    strs = None
                if not strs:
                    self._label_tokens = {"status": "unavailable (no /tokenize with token strings)"}
                    return
                pieces.add(strs[0])
            found[label] = sorted(pieces)
        try:
            aliases = {labels: label_aliases(labels, found) for labels in (LEVELS, PAIR_LABELS)}
        except ValueError as exc:
            raise TeacherError(
                f"{self.settings['model']}: the answer labels' first tokens are not distinct "
                f"({exc}); change the labels' wording or the model"
            ) from None
        self._aliases = aliases
        self._label_tokens = {"status": "distinct", "first_tokens": found}

    # -- scoring
    def answer_points(self, images: Sequence[ImageRef]) -> list[LabelScores]:
        return self._run([([img.path], self.prompts["point"]) for img in images], LEVELS)

    def answer_pairs(self, pairs: Sequence[tuple[ImageRef, ImageRef]]) -> list[LabelScores]:
        return self._run([([a.path, b.path], self.prompts["pair"]) for a, b in pairs], PAIR_LABELS)

    def _run(self, items: list[tuple[list[str], str]], labels: tuple[str, ...]) -> list[LabelScores]:
        if not items:
            return []
        self._ensure_ready()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._score_all(items, labels))
        # Called from inside a running event loop (a notebook): run ours on a helper thread.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-teacher") as pool:
            return pool.submit(asyncio.run, self._score_all(items, labels)).result()

    async def _score_all(self, items: list[tuple[list[str], str]], labels: tuple[str, ...]) -> list[LabelScores]:
        """``max_concurrency`` workers drain the items, so at most that many requests are in flight.

        Each worker has its own client and keep-alive connection: a pool shared by all
        workers costs milliseconds of CPU per request at 32 connections (httpcore
        rescans every queued request against every connection on each event).
        """
        results: list[LabelScores] = [None] * len(items)  # type: ignore[list-item]
        todo = iter(enumerate(items))  # shared by the workers (one event-loop thread: no lock needed)

        async def worker() -> None:
            async with httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1),
                headers=self._headers(),
                timeout=httpx.Timeout(self.settings["request_timeout_s"]),
                verify=_ssl_context(),
            ) as client:
                for i, (paths, prompt) in todo:
                    results[i] = await self._score_one(client, paths, prompt, labels)

        await asyncio.gather(*(worker() for _ in range(min(self.settings["max_concurrency"], len(items)))))
        return results

    async def _score_one(
        self, client: httpx.AsyncClient, paths: list[str], prompt: str, labels: tuple[str, ...]
    ) -> LabelScores:
        try:
            encoded = [await asyncio.to_thread(image_data_url, p, self.encoding) for p in paths]
            payload = chat_payload(self.settings["model"], [e.data_url for e in encoded], prompt, self.settings)
            top = parse_top_logprobs(await self._post(client, payload))
        except (InputError, RequestFailed, ValueError) as exc:
            return LabelScores.failed(labels, str(exc))
        except Exception as exc:
            log.exception("unexpected error scoring %s", paths)
            return LabelScores.failed(labels, f"unexpected {type(exc).__name__}: {exc}")
        scores = collapse_top_logprobs(top, labels, self._aliases[labels], self.settings["missing_token_policy"])
        scores.image_bytes = [e.kind for e in encoded]
        return scores  # as answered: the acceptance check (min_token_mass) is the caller's (Teacher.accept)

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> Any:
        """POST with retries; the parsed JSON body of a 200, else RequestFailed with the reason."""
        url = f"{self._base_url}/chat/completions"
        timeout = self.settings["request_timeout_s"]
        attempts = self.settings["max_retries"] + 1
        reason, wait_hint = "", None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, wait_hint))
            wait_hint = None
            try:
                # httpx timeouts are per phase (connect/read/...); this bounds the whole exchange, body included.
                response, body = await asyncio.wait_for(read_bounded(client, url, payload), timeout)
            except ResponseTooLarge as exc:  # a server that sends that much will do it again: no retry
                raise RequestFailed(f"{url}: {exc}") from None
            except (TimeoutError, httpx.TimeoutException):
                reason = f"no answer within request_timeout_s={timeout:g}s"
                continue
            except httpx.ConnectError as exc:
                reason = f"cannot connect to {url} ({exc})"
                if self._unreachable:
                    break
                continue
            except httpx.TransportError as exc:
                reason = f"connection to {url} failed ({type(exc).__name__}: {exc})"
                continue
            except httpx.HTTPError as exc:  # e.g. an undecodable body: retrying would not help
                raise RequestFailed(f"request to {url} failed ({type(exc).__name__}: {exc})") from None
            if response.status_code == 200:
                self._unreachable = False
                try:
                    return json.loads(body)
                except ValueError:
                    text = body[:120].decode("utf-8", "replace")
                    raise RequestFailed(f"malformed JSON in the answer ({text!r}...)") from None
            answer = httpx.Response(response.status_code, content=body)
            reason = f"HTTP {response.status_code}: {server_error_text(answer)}"
            if response.status_code not in RETRY_STATUS:
                raise RequestFailed(reason)  # a bad request stays bad: no retry
            wait_hint = _retry_after(response)
        if reason.startswith("cannot connect"):
            self._unreachable = True
        raise RequestFailed(f"{reason} (gave up after {attempt + 1} attempt(s))")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_S)
        ceiling = min(self.settings["backoff_s"] * 2 ** (attempt - 1), MAX_BACKOFF_S)
        return random.uniform(ceiling / 2, ceiling)  # jitter: retries from many items do not line up

    # -- provenance and clean-up
    def setup(self) -> None:
        """Start (launched mode) and check the server now, so that describe() reports the checks."""
        self._ensure_ready()

    def score_settings(self) -> dict[str, Any]:
        """What changes the answer for an image and a prompt (no endpoint, key or operational knob)."""
        s = self.settings
        return {
            "backend": self.backend,
            "model": s["model"],
            "top_logprobs": s["top_logprobs"],
            "temperature": s["temperature"],
            "max_tokens": s["max_tokens"],
            "image": self.encoding.describe(),
            "visual_budget": s["_budget"].describe() if s["_budget"] else None,
            "enable_thinking": s["enable_thinking"],
            # What each request carries beyond the OpenAI fields (thinking mode, processor limits, extra_body).
            "request_extras": request_extras(s),
            "missing_token_policy": s["missing_token_policy"],
            "check_label_tokens": s["check_label_tokens"],
            # A launched server's arguments that may change answers (--dtype, --quantization, ...); an
            # endpoint's are not known here (docs/teacher_vllm.md: one model id, one set of weights).
            **({"serve_args": args} if (args := answer_serve_args(s["launch"].get("args") or [])) else {}),
        }

    def acceptance(self) -> dict[str, Any]:
        return {"min_token_mass": self.settings["min_token_mass"]}

    def operational_settings(self) -> dict[str, Any]:
        s = self.settings
        knobs = ("max_concurrency", "request_timeout_s", "max_retries", "backoff_s")
        out: dict[str, Any] = {"endpoint": s["base_url"] or "launched", "gpus": s["gpus"], **{k: s[k] for k in knobs}}
        if s["base_url"] is None:
            lc = s["launch"]
            out["launch"] = {
                "tensor_parallel_size": lc["tensor_parallel_size"],
                "max_model_len": lc["max_model_len"],
                "trust_remote_code": lc["trust_remote_code"],
                "args": lc["args"],
            }
        return out

    def facts(self) -> dict[str, Any]:
        # The label tokens found by /tokenize decide the token -> label mapping; they follow from the
        # model (in score_settings), so they are a fact about it, not a setting.
        return {"label_tokens": self._label_tokens}

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._base_url = self.settings["base_url"]
            self._ready = False
