"""Images as ``data:`` URLs for an OpenAI-compatible multimodal server.

What the teacher judges must be the image itself, not an artifact of how LEAF sent it.
The transport (``image_transport`` of a vLLM teacher) decides the bytes:

* ``auto`` (default): the file's own bytes, with its mime type, when they show the server
  exactly the pixels every other stage decodes (:func:`leaf_steps.images.sendable_as_is`:
  JPEG/PNG/WebP, RGB or grayscale, no alpha, no EXIF rotation, not larger than
  ``max_side``); otherwise (downscaled, rotated, 16-bit, alpha, palette, CMYK, ...) a
  lossless PNG of :func:`load_image`'s pixels.
* ``png``: always a lossless PNG of :func:`load_image`'s pixels.
* ``jpeg``: always a JPEG re-encode at ``quality`` (lossy: it adds compression artifacts to
  the images the teacher is asked to judge; an explicit choice for bandwidth-bound setups).

Each encoding says which it was (:class:`EncodedImage.kind`: ``original``, ``png`` or
``jpeg``); the scoring steps write it per row (``image_bytes``).

The teacher server tiles what it receives (InternVL: 448 px tiles of 256 visual tokens
each), so the resolution sent drives prefill cost: images are downscaled so that the
longer side is at most ``max_side``; they are never upscaled.

Encodings are cached (LRU, bounded in bytes) under path + mtime + size + settings: a pair
run shows each training image in several pairs, and a point run followed by a pair run in
the same process reuses the point encodings.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from leaf_steps.core.errors import InputError
from leaf_steps.images import load_rgb, probe, sendable_as_is

TRANSPORTS = ("auto", "png", "jpeg")
MIME = {"png": "image/png", "jpeg": "image/jpeg"}
# A 1024 px PNG is 1-2 MB in base64; the cache is bounded by bytes, not entries.
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class EncodingSettings:
    """How an image is prepared for the server (part of the teacher's score settings)."""

    max_side: int = 1024
    transport: str = "auto"
    quality: int = 90  # JPEG quality; used by the "jpeg" transport only

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {list(TRANSPORTS)}, got {self.transport!r}")
        if not isinstance(self.max_side, int) or self.max_side < 1:
            raise ValueError(f"max_side must be a positive integer, got {self.max_side!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {self.quality!r}")

    def describe(self) -> dict[str, object]:
        """The settings that change what the server sees (quality only where it applies)."""
        out: dict[str, object] = {"max_side": self.max_side, "transport": self.transport}
        if self.transport == "jpeg":
            out["quality"] = self.quality
        return out


@dataclass(frozen=True)
class EncodedImage:
    data_url: str
    kind: str  # "original" (the file's own bytes), "png" or "jpeg" (re-encoded from load_image's pixels)


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept; never larger than the input."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_image(path: str | Path, max_side: int | None = None) -> Image.Image:
    """The image as every stage sees it (:func:`leaf_steps.images.load_rgb`), downscaled so that its
    longer side is at most ``max_side`` (never upscaled).

    For JPEG the decoder is asked for a reduced-size decode (DCT scaling, at least the
    target size) first, which makes large phone photos several times cheaper to load.
    """
    info = probe(path)
    size = (info.width, info.height) if max_side is None else target_size(info.width, info.height, max_side)
    img = load_rgb(path, draft_size=size if max_side is not None else None)
    # The size comes from the original dimensions, not the draft's rounded ones.
    return img if img.size == size else _resize(img, size)


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so that the longer side is <= ``max_side``; an image already small enough is returned as is."""
    size = target_size(img.width, img.height, max_side)
    return img if size == img.size else _resize(img, size)


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Bicubic is antialiased when shrinking in Pillow and costs about a third less CPU
    # than Lanczos on the 1-2x reductions left after draft decoding.
    return img.resize(size, Image.Resampling.BICUBIC)


def encode_bytes(img: Image.Image, kind: str, quality: int = 90) -> bytes:
    """``img`` as PNG (lossless) or JPEG (``quality``)."""
    buf = io.BytesIO()
    if kind == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    elif kind == "png":
        img.save(buf, format="PNG", compress_level=1)  # lossless either way; favour speed
    else:
        raise ValueError(f"cannot encode as {kind!r}")
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_image(path: str | Path, settings: EncodingSettings) -> EncodedImage:
    """What is sent for ``path`` under ``settings`` (uncached; see :func:`image_data_url`)."""
    if settings.transport == "auto":
        info = probe(path)
        if sendable_as_is(info, settings.max_side):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise InputError(f"{path}: cannot read image ({exc})") from exc
            # probe() reads the header only: decode once so that a truncated file fails here, as it
            # would in every other stage, instead of reaching the server.
            load_rgb(path)
            return EncodedImage(data_url(data, info.mime), "original")
    kind = "jpeg" if settings.transport == "jpeg" else "png"
    img = load_image(path, settings.max_side)
    return EncodedImage(data_url(encode_bytes(img, kind, settings.quality), MIME[kind]), kind)


class _Key(NamedTuple):
    path: str
    mtime_ns: int
    size: int
    settings: EncodingSettings


class _ByteLRU:
    """A thread-safe LRU bounded by the total size of its values (workers encode in threads)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[_Key, EncodedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: _Key) -> EncodedImage | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: _Key, value: EncodedImage) -> None:
        size = len(value.data_url)
        with self._lock:
            if key in self._items or size > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.data_url)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "entries": len(self._items), "bytes": self._bytes}


_CACHE = _ByteLRU(CACHE_BYTES)


def image_data_url(path: str | Path, settings: EncodingSettings) -> EncodedImage:
    """The ``data:image/...;base64,...`` URL for the image at ``path`` and whether it carries the file's
    own bytes (cached; a rewritten file is encoded again)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    key = _Key(str(path.resolve()), st.st_mtime_ns, st.st_size, settings)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    encoded = encode_image(path, settings)
    _CACHE.put(key, encoded)
    return encoded


def clear_cache() -> None:
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    return _CACHE.info()
