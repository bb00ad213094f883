"""The teacher score store: every answer a teacher gave, kept by what was asked, shared by all runs.

A teacher's answer to a request depends on the bytes of the image(s) and on the settings that change
an answer (the backend's ``score_settings()``: model, how the image is sent, visual budget, thinking
mode, token mapping, ...; the prompt of that kind; :data:`ANSWER_FORMAT_VERSION`). It depends on
nothing else: not on the run, the split, the shard, batch size, concurrency, timeouts, the endpoint or
the GPU count. So answers are stored under

* ``settings_hash``: :func:`request_settings` hashed (``<store>/<settings_hash>/settings.json`` holds
  the settings themselves, written once);
* ``kind``: ``point`` or ``pair``;
* ``key``: the sha256 of the image file's bytes (point), or ``<sha256 of A>:<sha256 of B>`` (pair, in the
  order shown: asking both orders is two requests, (a, b) and (b, a)).

Layout: ``<store>/<settings_hash>/<kind>/part-<time>-<uuid>.parquet`` (:data:`ANSWER_SCHEMA` rows).
Writers only ever add NEW part files, written to a hidden temporary name, fsynced, then renamed
(atomic within a directory, on local and network file systems alike); readers list ``part-*.parquet``
only. So concurrent scoring jobs (shards, runs, configs) never rewrite a shared file: nothing is lost
or torn. Two jobs that answer the same request at the same time both add it; readers keep the first by
the parts' name order (every copy is an answer to the same request with the same settings).

Failed requests are never stored (they are asked again next time). An answer whose tokens were not a
label is stored (asking again gives the same answer); the acceptance check (``min_token_mass``) is made
when answers become rows, never at storing time.

:data:`ANSWER_FORMAT_VERSION` must be bumped whenever the code that turns a response into an answer
changes what it returns for the same response (``teacher_math.collapse_top_logprobs`` /
``label_aliases``, the vLLM response parsing, the transformers label-token mapping, the NIQE level
mapping): stored answers then no longer match and are asked again. ``tests/test_store.py`` fails when
one of those functions changes without a decision about the version (see :data:`ANSWER_CODE`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_text, make_provenance, read_provenance, stable_hash, write_parquet
from leaf_steps.teachers.answers import ANSWER_SCHEMA

log = logging.getLogger("leaf.teachers.store")

ANSWER_FORMAT_VERSION = 1
# The functions whose output is a stored answer; a test hashes their code (tests/test_store.py).
ANSWER_CODE = (
    "leaf_steps.teachers.teacher_math:collapse_top_logprobs",
    "leaf_steps.teachers.teacher_math:label_aliases",
    "leaf_steps.teachers.teacher_math:normalize_token",
    "leaf_steps.teachers.vllm:parse_top_logprobs",
    "leaf_steps.teachers.vllm:chat_payload",
    "leaf_steps.teachers.vllm:request_extras",
    "leaf_steps.teachers.hf:label_token_ids",
    "leaf_steps.teachers.standin:level_logliks",
    "leaf_steps.teachers.standin:pair_logliks",
)
KINDS = ("point", "pair")
MARKER = "leaf-teacher-store.json"
STORE_FORMAT = 1
SETTINGS_FILE = "settings.json"
PART_GLOB = "part-*.parquet"


def request_settings(teacher_settings: dict[str, Any], kind: str, prompt: str | None) -> dict[str, Any]:
    """What the stored answers of one kind depend on besides the images (hashed into the settings_hash).

    ``prompt`` is None for a teacher that reads no prompt (the NIQE stand-in)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {"kind": kind, "teacher": teacher_settings, "prompt": prompt, "answer_format": ANSWER_FORMAT_VERSION}


def settings_hash(settings: dict[str, Any]) -> str:
    return stable_hash(settings, length=20)


def pair_key(sha_a: str, sha_b: str) -> str:
    """The content key of a pair request: A's bytes hash, then B's (the order shown)."""
    return f"{sha_a}:{sha_b}"


@dataclass(frozen=True)
class Lookup:
    answers: pl.DataFrame  # ANSWER_SCHEMA rows of the keys found, one per key
    parts_read: int


class TeacherStore:
    """A store folder (created on first write). ``TeacherStore(path).lookup(...)`` on a folder that does not
    exist finds nothing."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ layout
    def kind_dir(self, shash: str, kind: str) -> Path:
        return self.root / shash / kind

    def parts(self, shash: str, kind: str) -> list[Path]:
        folder = self.kind_dir(shash, kind)
        return sorted(folder.glob(PART_GLOB)) if folder.is_dir() else []

    def is_store(self) -> bool:
        return (self.root / MARKER).is_file()

    def _ensure(self) -> None:
        if not (self.root / MARKER).exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self.root / MARKER,
                json.dumps(
                    {
                        "format": STORE_FORMAT,
                        "what": "LEAF teacher score store (leaf_steps/teachers/store.py); "
                        "shared by runs, safe to delete (answers are then asked again); summary: leaf store summary",
                    },
                    indent=2,
                )
                + "\n",
            )

    def register(self, shash: str, settings: dict[str, Any]) -> None:
        """Write ``<settings_hash>/settings.json`` once; an existing one must hold the same settings."""
        path = self.root / shash / SETTINGS_FILE
        if path.exists():
            try:
                recorded = json.loads(path.read_text())
            except ValueError as exc:
                raise InputError(f"{path}: not readable JSON ({exc}); delete the file (it is rewritten)") from exc
            if recorded != json.loads(json.dumps(settings, default=str)):
                raise InputError(
                    f"{path}: holds other settings than those hashed to {shash}; the store at "
                    f"{self.root} is damaged (delete {path.parent} to start that part over)"
                )
            return
        self._ensure()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")

    # ------------------------------------------------------------------ reading
    def read_kind(self, shash: str, kind: str, columns: list[str] | None = None) -> tuple[pl.DataFrame, int]:
        """Every answer of (settings_hash, kind), first copy of each key by part order; and the parts read."""
        frames = []
        files = self.parts(shash, kind)
        for part in files:
            try:
                frame = pl.read_parquet(part, columns=columns)
            except FileNotFoundError:  # removed by `leaf store compact` after listing: its rows are in the new part
                continue
            except Exception as exc:
                raise InputError(
                    f"{part}: not a readable store part ({exc}); delete it (its answers are asked again)"
                ) from exc
            frames.append(frame)
        schema = {c: ANSWER_SCHEMA[c] for c in (columns or ANSWER_SCHEMA)}
        if not frames:
            return pl.DataFrame(schema=schema), 0
        table = pl.concat(frames, how="vertical_relaxed").cast(schema)
        return table.unique("key", keep="first", maintain_order=True), len(frames)

    def lookup(self, shash: str, kind: str, keys: Iterable[str]) -> Lookup:
        """The stored answers of ``keys`` (those found)."""
        wanted = pl.Series("key", list(dict.fromkeys(keys)), dtype=pl.String)
        table, n = self.read_kind(shash, kind)
        return Lookup(table.filter(pl.col("key").is_in(wanted.implode())), n)

    # ------------------------------------------------------------------ writing
    def add(self, shash: str, kind: str, rows: pl.DataFrame, provenance: dict[str, Any]) -> Path | None:
        """Add answers as one new part file (atomic); None when ``rows`` is empty."""
        if rows.height == 0:
            return None
        missing = [c for c in ANSWER_SCHEMA if c not in rows.columns]
        if missing:
            raise ValueError(f"store rows lack {missing}")
        self._ensure()
        folder = self.kind_dir(shash, kind)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = folder / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        write_parquet(
            rows.select(list(ANSWER_SCHEMA)).cast(ANSWER_SCHEMA),
            path,
            provenance | {"settings_hash": shash, "kind": kind, "host": socket.gethostname(), "pid": os.getpid()},
        )
        _fsync_dir(folder)
        return path

    def compact(self, shash: str, kind: str) -> tuple[int, int]:
        """Merge the parts of (settings_hash, kind) into one (first copy of each key); (parts before, rows).

        Offline: run it when no scoring job writes to this store. The merged part is written before the old
        ones are removed, so a reader that starts meanwhile finds every answer (some twice)."""
        files = self.parts(shash, kind)
        if len(files) <= 1:
            return len(files), (pl.read_parquet(files[0]).height if files else 0)
        table, _ = self.read_kind(shash, kind)
        merged = self.add(shash, kind, table, make_provenance("store_compact", merged_parts=len(files)))
        for part in files:
            if part != merged:
                part.unlink(missing_ok=True)
        return len(files), table.height

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Settings hashes with their settings, rows and parts per kind, bytes on disk."""
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such store folder")
        entries = []
        total_bytes = 0
        for settings_file in sorted(self.root.glob(f"*/{SETTINGS_FILE}")):
            shash = settings_file.parent.name
            try:
                settings = json.loads(settings_file.read_text())
            except ValueError:
                settings = {"unreadable": str(settings_file)}
            kinds = {}
            for kind in KINDS:
                files = self.parts(shash, kind)
                if not files:
                    continue
                size = sum(f.stat().st_size for f in files)
                total_bytes += size
                table, _ = self.read_kind(shash, kind, ["key", "answer_error"])
                first, last = read_provenance(files[0]), read_provenance(files[-1])
                kinds[kind] = {
                    "answers": table.height,
                    "not_label_answers": int(table["answer_error"].is_not_null().sum()),
                    "parts": len(files),
                    "bytes": size,
                    "first_added": first.get("created_utc"),
                    "last_added": last.get("created_utc"),
                }
            teacher = settings.get("teacher", {}) if isinstance(settings, dict) else {}
            entries.append(
                {
                    "settings_hash": shash,
                    "kind": settings.get("kind"),
                    "backend": teacher.get("backend"),
                    "model": teacher.get("model") or teacher.get("fitted_model_sha256"),
                    "prompt_hash": stable_hash(settings["prompt"]) if settings.get("prompt") else None,
                    "settings": settings,
                    "kinds": kinds,
                }
            )
        return {"store": str(self.root), "format": STORE_FORMAT, "settings": entries, "bytes": total_bytes}


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX: the directory entry is data of the directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
