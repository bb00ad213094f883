#!/usr/bin/env python3
"""A loopback stand-in for ``vllm serve`` that speaks vLLM's OpenAI-compatible schema.

It answers ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /tokenize`` with the bodies vLLM returns (checked against
vllm/entrypoints/openai/chat_completion/protocol.py: ``choices[0].logprobs.content[i]``
with ``token``/``logprob``/``bytes``/``top_logprobs``; errors as
``{"error": {"message", "type", "param", "code"}}``; ``/v1/*`` behind
``Authorization: Bearer`` when an API key is set, ``/health`` and ``/tokenize`` open).

The answer distribution is deterministic and derived from the image bytes, so tests
can check the client's numbers against :func:`answer_logprobs`:

* one image (point prompt): mean luminance q in [0, 1] sets a target score
  s = 1 + 4q; level k gets logit -(v_k - s)^2 / (2 * 0.8^2) + 2, v = 5..1;
* two images (pair prompt, A then B): logit_A = 2 + 4 (q_A - q_B), logit_B = 2 - 4 (q_A - q_B);

plus fixed distractor tokens ("The", "I", newline, ...) so that the answer tokens
never hold all the mass, and a tail of filler tokens so that a small ``top_logprobs``
truncates low-probability answers, as a real model does.

Misbehaviour for tests is set by :class:`Behaviour` (constructor, or ``FAKE_VLLM_*``
environment variables when run as a script): latency, leading-space/case token
variants, tokens missing from the top K, sub-word tokens, 500s / 429s / hangs for the
first N chat requests, non-JSON bodies, answers without logprobs, dying after N
answers, slow or never-healthy start-up, ignoring SIGTERM, a child "worker" process,
a thinking model (``think_first``: "<think>" is the likely first token unless the request
sets ``chat_template_kwargs: {"enable_thinking": false}``, as Qwen3's chat template does)
and a model that opens with another word (``lead_token``).

The last chat request is recorded without its images' base64 (``stats()["last_request"]``,
with each image's mime type, size and sha256), and its images' raw bytes are kept in
process (:meth:`FakeVllmServer.last_images`), so tests can check exactly what was sent.
Only 127.0.0.1 is served; every wait is bounded.

Run as a script it mimics ``vllm serve MODEL --port P --max-logprobs K
--limit-mm-per-prompt '{"image": 2}' ...`` (``tests/bin/vllm`` calls it that way) and
prints ``fake vllm (pid N) listening on http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

LEVEL_WORDS = ("Excellent", "Good", "Fair", "Poor", "Bad")
LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)
PAIR_WORDS = ("A", "B")
LEVEL_SIGMA = 0.8
PAIR_SLOPE = 4.0
ANSWER_BIAS = 2.0
# Tokens a chat model puts at the first answer position instead of the label.
DISTRACTORS = {"The": 0.0, "I": -0.5, "This": -1.0, "\n": -1.5, "**": -2.0, "Based": -2.5}
# A first token that dominates (a thinking block, a chatty opening): the labels keep their relative
# logits but hold a tiny share of the probability, as they do in a real model that thinks first.
LEAD_LOGIT = 12.0
FILLERS = {f"filler{i}": -5.0 - 0.25 * i for i in range(40)}
# Variants of one label and the share of its probability each gets (sums to 1).
VARIANT_SHARES = (("{w}", 0.6), (" {w}", 0.3), ("{lower}", 0.1))
MAX_MODEL_LEN = 8192
SUBWORD_CHARS = 5


@dataclass
class Behaviour:
    latency_s: float = 0.0
    fail_first: int = 0  # the first N chat requests answer 500
    rate_limit_first: int = 0  # the first N chat requests answer 429 (with Retry-After: 0)
    hang_first: int = 0  # the first N chat requests wait hang_s before answering
    hang_s: float = 30.0
    malformed: bool = False  # chat answers are truncated, non-JSON bodies
    no_logprobs: bool = False  # chat answers carry "logprobs": null
    die_after: int | None = None  # after N chat answers the server drops every connection
    variants: bool = False  # "Good", " Good", "good" share the label's probability
    missing: tuple[str, ...] = ()  # labels never returned among the top tokens
    subword: bool = False  # words longer than 5 characters are split ("Excel" + "lent")
    api_key: str | None = None
    max_logprobs: int = 20  # --max-logprobs
    image_limit: int = 1  # --limit-mm-per-prompt '{"image": N}' (vLLM's historical default: 1)
    never_healthy: bool = False  # /health answers 503 forever
    think_first: bool = False  # "<think>" first unless chat_template_kwargs.enable_thinking is false
    lead_token: str | None = None  # a word the model says first whatever it is asked (e.g. "Sure")
    huge_body_bytes: int = 0  # chat answers are 200s with a body of this many bytes (whitespace), sent in chunks
    endless_body: bool = False  # chat answers are 200s whose chunked body never ends (a chunk every 50 ms)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Behaviour:
        """``FAKE_VLLM_<FIELD>`` variables, e.g. FAKE_VLLM_LATENCY_S=0.1, FAKE_VLLM_MISSING=Bad,Poor."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"FAKE_VLLM_{f.name.upper()}")
            if raw is None:
                continue
            if f.name == "missing":
                values[f.name] = tuple(x for x in raw.split(",") if x)
            elif f.name in ("api_key", "lead_token"):
                values[f.name] = raw
            elif f.name in (
                "malformed",
                "no_logprobs",
                "variants",
                "subword",
                "never_healthy",
                "think_first",
                "endless_body",
            ):
                values[f.name] = raw.lower() in ("1", "true", "yes")
            elif f.name in ("latency_s", "hang_s"):
                values[f.name] = float(raw)
            else:
                values[f.name] = int(raw)
        return cls(**values)


# ---------------------------------------------------------------------------
# The deterministic "model"


def image_luminance(data: bytes) -> float:
    """Mean luminance of an encoded image in [0, 1] (JPEGs decoded at reduced size: cheap)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("L", (64, 64))
        small = img.convert("L")
        small.thumbnail((64, 64))
        hist = small.histogram()
    total = sum(hist)
    return sum(i * n for i, n in enumerate(hist)) / (255.0 * total)


def first_subword(word: str, subword: bool) -> str:
    return word[:SUBWORD_CHARS] if subword else word


def _log_softmax(logits: dict[str, float]) -> dict[str, float]:
    m = max(logits.values())
    lse = m + math.log(sum(math.exp(v - m) for v in logits.values()))
    return {k: v - lse for k, v in logits.items()}


def answer_logprobs(
    images: list[bytes], behaviour: Behaviour | None = None, lead: str | None = None
) -> dict[str, float]:
    """Next-token log-probabilities over the toy vocabulary for a prompt with these images.

    Keys are token strings as the server returns them (with variants and sub-words
    when the behaviour asks for them); missing labels are still in the vocabulary
    (they just never make it into the returned top K). ``lead``: a token that comes
    first with most of the probability (see :func:`lead_token`).
    """
    behaviour = behaviour or Behaviour()
    if len(images) == 1:
        s = 1.0 + 4.0 * image_luminance(images[0])
        words = {w: -((v - s) ** 2) / (2 * LEVEL_SIGMA**2) + ANSWER_BIAS for w, v in zip(LEVEL_WORDS, LEVEL_VALUES)}
    elif len(images) == 2:
        d = image_luminance(images[0]) - image_luminance(images[1])
        words = {"A": ANSWER_BIAS + PAIR_SLOPE * d, "B": ANSWER_BIAS - PAIR_SLOPE * d}
    else:
        raise ValueError(f"the fake model answers prompts with 1 or 2 images, got {len(images)}")
    logits: dict[str, float] = {**DISTRACTORS, **FILLERS}
    if lead is not None:
        logits[lead] = LEAD_LOGIT
    for word, logit in words.items():
        token = first_subword(word, behaviour.subword)
        if behaviour.variants:
            for pattern, share in VARIANT_SHARES:
                logits[pattern.format(w=token, lower=token.lower())] = logit + math.log(share)
        else:
            logits[token] = logit
    return _log_softmax(logits)


def lead_token(body: dict[str, Any], behaviour: Behaviour) -> str | None:
    """The token the model opens with for this request, if any: ``lead_token`` always; "<think>" for
    a thinking model unless the request turned thinking off through the chat template."""
    if behaviour.lead_token:
        return behaviour.lead_token
    thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
    return "<think>" if behaviour.think_first and thinking is not False else None


def label_of(token: str, behaviour: Behaviour) -> str | None:
    """Which label a returned token string stands for (test helper)."""
    key = token.strip().lower()
    for word in LEVEL_WORDS + PAIR_WORDS:
        if key == first_subword(word, behaviour.subword).lower():
            return word
    return None


def toy_tokenize(text: str, subword: bool) -> list[str]:
    """Words with their leading space, punctuation alone; long words split when ``subword``."""
    pieces = re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\s+", text)
    out: list[str] = []
    for piece in pieces:
        if subword and len(piece.strip()) > SUBWORD_CHARS:
            lead = " " if piece.startswith(" ") else ""
            word = piece.strip()
            chunks = [word[i : i + SUBWORD_CHARS] for i in range(0, len(word), SUBWORD_CHARS)]
            out.append(lead + chunks[0])
            out.extend(chunks[1:])
        else:
            out.append(piece)
    return out


def token_id(token: str) -> int:
    return zlib.crc32(token.encode()) % 150_000


# ---------------------------------------------------------------------------
# HTTP


class _Refused(Exception):
    def __init__(self, status: int, message: str, err_type: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.err_type = status, message, err_type


def _decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a ``data:image/...;base64,`` URL."""
    m = re.match(r"data:(image/[A-Za-z0-9.+-]+);base64,(.*)$", url, re.S)
    if not m:
        raise _Refused(400, "only data:image/...;base64 URLs are accepted by the fake server")
    try:
        return m.group(1), base64.b64decode(m.group(2), validate=True)
    except ValueError as exc:
        raise _Refused(400, f"invalid base64 image data: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    # One write per response and no Nagle delay: otherwise every loopback answer waits
    # ~40 ms for a delayed ACK between the header and body segments.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: benchmarks send thousands
        pass

    # -- plumbing
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), headers)

    def _send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_unbounded(self, size: int) -> None:
        """A 200 of ``size`` bytes of whitespace (Content-Length), or with size 0 a chunked body that never
        ends; stops when the client hangs up or the server stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length" if size else "Transfer-Encoding", str(size) if size else "chunked")
        self.end_headers()
        chunk = b" " * 65536
        sent = 0
        try:
            while not self.server.stopping.is_set() and (not size or sent < size):
                if size:
                    self.wfile.write(chunk[: size - sent])
                    sent += min(len(chunk), size - sent)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (1024, b" " * 1024))
                    self.wfile.flush()
                    self.server.stopping.wait(0.05)
        except OSError:  # the client gave up on us: what the test wants
            pass
        self.close_connection = True

    def _send_error(self, status: int, message: str, err_type: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(
            status, {"error": {"message": message, "type": err_type, "param": None, "code": status}}, headers
        )

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _Refused(400, f"request body is not valid JSON: {exc}") from exc

    def _dead(self) -> bool:
        if self.server.dead.is_set():
            self.close_connection = True  # a crashed server answers nothing
            return True
        return False

    def _authorised(self) -> bool:
        key = self.server.behaviour.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send_json(401, {"error": "Unauthorized"})
            return False
        return True

    # -- routes
    def do_GET(self) -> None:
        if self._dead():
            return
        if self.path == "/health":
            if self.server.behaviour.never_healthy:
                self._send_raw(503, b"")
            else:
                self._send_raw(200, b"")
        elif self.path == "/v1/models":
            if self._authorised():
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": self.server.model,
                                "object": "model",
                                "created": int(self.server.started),
                                "owned_by": "vllm",
                                "root": self.server.model,
                                "parent": None,
                                "max_model_len": MAX_MODEL_LEN,
                                "permission": [],
                            }
                        ],
                    },
                )
        elif self.path == "/fake/stats":
            self._send_json(200, self.server.stats_snapshot())
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        if self._dead():
            return
        try:
            if self.path == "/v1/chat/completions":
                if self._authorised():
                    self._chat()
            elif self.path == "/tokenize":
                self._tokenize(self._read_json())
            else:
                self._send_json(404, {"detail": "Not Found"})
        except _Refused as exc:
            self._send_error(exc.status, exc.message, exc.err_type)

    def _tokenize(self, body: dict[str, Any]) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise _Refused(400, "prompt: field required")
        strs = toy_tokenize(body["prompt"], self.server.behaviour.subword)
        self._send_json(
            200,
            {
                "count": len(strs),
                "max_model_len": MAX_MODEL_LEN,
                "tokens": [token_id(t) for t in strs],
                "token_strs": strs if body.get("return_token_strs") else None,
            },
        )

    def _chat(self) -> None:
        srv, b = self.server, self.server.behaviour
        n = srv.next_request_index()
        body = self._read_json()
        srv.record_request(body, self.headers.get("Authorization"))
        if b.latency_s:
            srv.stopping.wait(b.latency_s)
        if n < b.hang_first:
            srv.stopping.wait(b.hang_s)
        if n < b.rate_limit_first:
            return self._send_error(429, "Too many requests", "RateLimitError", {"Retry-After": "0"})
        if n < b.fail_first:
            return self._send_error(500, "EngineCore encountered an issue (fake)", "InternalServerError")
        if b.malformed:
            return self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": ')
        if b.huge_body_bytes or b.endless_body:
            return self._send_unbounded(b.huge_body_bytes)
        images, model = self._validate_chat(body)
        logprobs = answer_logprobs(images, b, lead_token(body, b))
        self._send_json(200, self._completion(body, model, logprobs, n))
        srv.count_answer()

    def _validate_chat(self, body: Any) -> tuple[list[bytes], str]:
        b = self.server.behaviour
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise _Refused(400, "messages: field required")
        model = body.get("model") or self.server.model
        if model != self.server.model:
            raise _Refused(404, f"The model `{model}` does not exist.", "NotFoundError")
        k = body.get("top_logprobs") or 0
        if body.get("logprobs") and k > b.max_logprobs:
            raise _Refused(400, f"Requested top logprobs of {k} exceeds maximum of {b.max_logprobs}.")
        images = []
        for message in body["messages"]:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "image_url":
                    images.append(_decode_data_url(part["image_url"]["url"]))
        self.server.record_images(images)
        images = [data for _, data in images]
        if len(images) > b.image_limit:
            raise _Refused(400, f"At most {b.image_limit} image(s) may be provided in one prompt.")
        if not images:
            raise _Refused(400, "the fake model needs at least one image")
        for data in images:
            try:
                image_luminance(data)
            except Exception as exc:
                raise _Refused(400, f"cannot identify image file: {exc}") from exc
        return images, model

    def _completion(self, body: dict[str, Any], model: str, logprobs: dict[str, float], n: int) -> dict[str, Any]:
        b = self.server.behaviour
        ranked = sorted(logprobs.items(), key=lambda kv: kv[1], reverse=True)
        token, lp = ranked[0]
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": token},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        if body.get("logprobs") and not b.no_logprobs:
            hidden = {w.lower() for w in b.missing}
            visible = [(t, v) for t, v in ranked if (label_of(t, b) or "").lower() not in hidden]
            top = visible[: int(body.get("top_logprobs") or 0)]
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": lp,
                        "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top],
                    }
                ]
            }
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 100, "total_tokens": 101, "completion_tokens": 1},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], model: str, behaviour: Behaviour, argv: list[str]):
        super().__init__(address, _Handler)
        self.model, self.behaviour, self.argv = model, behaviour, argv
        self.started = time.time()
        self.dead = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.requests = 0
        self.answers = 0
        self.last_request: dict[str, Any] | None = None
        self.last_images: list[tuple[str, bytes]] = []
        self.auth_headers: set[str] = set()
        self.worker_pid: int | None = None

    def next_request_index(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests - 1

    def record_request(self, body: Any, auth: str | None) -> None:
        summary = {k: v for k, v in body.items() if k != "messages"} if isinstance(body, dict) else None
        if isinstance(body, dict):
            summary["content_types"] = [
                [p.get("type") for p in m.get("content", [])]
                for m in body.get("messages", [])
                if isinstance(m.get("content"), list)
            ]
            summary["texts"] = [
                p.get("text")
                for m in body.get("messages", [])
                if isinstance(m.get("content"), list)
                for p in m["content"]
                if p.get("type") == "text"
            ]
        with self._lock:
            self.last_request = summary
            if auth:
                self.auth_headers.add(auth)

    def record_images(self, images: list[tuple[str, bytes]]) -> None:
        with self._lock:
            self.last_images = list(images)
            if self.last_request is not None:
                self.last_request["images"] = [
                    {"mime": mime, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    for mime, data in images
                ]

    def count_answer(self) -> None:
        with self._lock:
            self.answers += 1
            die = self.behaviour.die_after is not None and self.answers >= self.behaviour.die_after
        if die and not self.dead.is_set():
            self.dead.set()
            # Stop accepting: new connections are refused, kept-alive ones get closed unanswered.
            threading.Thread(target=self._die, daemon=True).start()

    def _die(self) -> None:
        self.shutdown()
        self.server_close()

    def stats_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "worker_pid": self.worker_pid,
                "argv": self.argv,
                "model": self.model,
                "chat_requests": self.requests,
                "answers": self.answers,
                "last_request": self.last_request,
                "auth_headers": sorted(self.auth_headers),
                "max_logprobs": self.behaviour.max_logprobs,
                "image_limit": self.behaviour.image_limit,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "api_key_required": bool(self.behaviour.api_key),
            }


class FakeVllmServer:
    """In-process fake server on 127.0.0.1 (port 0: a free port). Use as a context manager."""

    def __init__(
        self, model: str = "fake/vlm", behaviour: Behaviour | None = None, port: int = 0, argv: list[str] | None = None
    ):
        self._server = _Server(("127.0.0.1", port), model, behaviour or Behaviour(), argv or [])
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def behaviour(self) -> Behaviour:
        return self._server.behaviour

    def stats(self) -> dict[str, Any]:
        return self._server.stats_snapshot()

    def last_images(self) -> list[tuple[str, bytes]]:
        """(mime type, raw bytes) of each image of the last chat request, in order."""
        with self._server._lock:
            return list(self._server.last_images)

    def start(self) -> FakeVllmServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()  # releases hanging handlers
        self._server.dead.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeVllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Script entry: behaves like `vllm serve`


def _parse_cli(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="vllm", description="fake `vllm serve` for tests")
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve")
    parser.add_argument("model", nargs="?", default="fake/vlm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-logprobs", type=int, default=20)
    parser.add_argument(
        "--limit-mm-per-prompt",
        type=json.loads,
        default=None,
        help="JSON, e.g. '{\"image\": 2}' (the form recent vLLM requires)",
    )
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _unknown = _parse_cli(argv)
    if args.host not in ("127.0.0.1", "localhost"):
        sys.exit(f"fake vllm: only loopback is served, got --host {args.host}")
    if (code := os.environ.get("FAKE_VLLM_EXIT_AT_START")) is not None:
        print("fake vllm: RuntimeError: CUDA out of memory (simulated start-up failure)", file=sys.stderr, flush=True)
        sys.exit(int(code))
    # A real server loads weights before it listens: connections are refused meanwhile.
    delay = min(float(os.environ.get("FAKE_VLLM_STARTUP_DELAY_S", "0")), 120.0)
    time.sleep(delay)
    behaviour = Behaviour.from_env()
    behaviour.max_logprobs = args.max_logprobs
    if args.limit_mm_per_prompt is not None:
        behaviour.image_limit = int(args.limit_mm_per_prompt.get("image", behaviour.image_limit))
    behaviour.api_key = args.api_key or os.environ.get("VLLM_API_KEY") or behaviour.api_key
    server = FakeVllmServer(args.model, behaviour, port=args.port, argv=argv)
    if os.environ.get("FAKE_VLLM_SPAWN_WORKER") == "1":
        # Like a tensor-parallel worker: a child in the same process group.
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        server._server.worker_pid = worker.pid
    if os.environ.get("FAKE_VLLM_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: server._server.stopping.set())
    server.start()
    print(f"fake vllm (pid {os.getpid()}) listening on http://127.0.0.1:{server.port}", flush=True)
    try:
        # Bounded wait: a forgotten server exits by itself after an hour.
        deadline = time.monotonic() + 3600
        while not server._server.stopping.wait(0.2) and not server._server.dead.is_set():
            if time.monotonic() > deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
