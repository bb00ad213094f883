"""Images as ``data:`` URLs for an OpenAI-compatible multimodal server.

The teacher server tiles what it receives (InternVL: 448 px tiles of 256 visual
tokens each), so the resolution sent drives prefill cost. Images are therefore
downscaled so that the longer side is at most ``max_side`` before encoding; they
are never upscaled (that would add cost and no information).

Encodings are cached (LRU) under path + mtime + size + settings: a pair run shows
each training image in several pairs, and a point run followed by a pair run in the
same process reuses the point encodings.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from leaf_steps.errors import InputError
from leaf_steps.images import load_rgb, probe

FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png")}

# About 256 x ~300 KB (base64 of a 1024 px JPEG at quality 90) = ~75 MB at most.
CACHE_SIZE = 256


@dataclass(frozen=True)
class EncodingSettings:
    """How an image is prepared for the server (part of the teacher's provenance)."""

    max_side: int = 1024
    format: str = "jpeg"
    quality: int = 90  # JPEG quality; ignored for PNG

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if not isinstance(self.max_side, int) or self.max_side < 1:
            raise ValueError(f"max_side must be a positive integer, got {self.max_side!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {self.quality!r}")


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


def encode_bytes(img: Image.Image, settings: EncodingSettings) -> bytes:
    pil_format, _ = FORMATS[settings.format]
    buf = io.BytesIO()
    if pil_format == "JPEG":
        img.save(buf, format="JPEG", quality=settings.quality)
    else:
        img.save(buf, format="PNG", compress_level=1)  # favour speed: the server decodes it once
    return buf.getvalue()


def to_data_url(data: bytes, settings: EncodingSettings) -> str:
    _, mime = FORMATS[settings.format]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cached_data_url(path: str, mtime_ns: int, size: int, settings: EncodingSettings) -> str:
    img = load_image(path, settings.max_side)
    return to_data_url(encode_bytes(img, settings), settings)


def image_data_url(path: str | Path, settings: EncodingSettings) -> str:
    """``data:image/...;base64,...`` for the image at ``path`` (cached; a rewritten file is re-encoded)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return _cached_data_url(str(path.resolve()), st.st_mtime_ns, st.st_size, settings)


def clear_cache() -> None:
    _cached_data_url.cache_clear()


def cache_info() -> functools._CacheInfo:
    return _cached_data_url.cache_info()
