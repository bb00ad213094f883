"""The one way LEAF turns an image file into pixels.

The dataset check, every teacher backend, the NIQE stand-in, the student (training and
evaluation) and ``leaf predict`` all call :func:`load_rgb`, so that a teacher and its student
never judge different pixels. The rules:

* Orientation: the EXIF orientation tag is applied (phone photos upright, as raters saw
  them). ``width``/``height`` everywhere are the upright size.
* Bit depth: 16-bit samples keep their high byte, for grayscale ("I;16*", "I") as Pillow
  and libpng already do for 16-bit RGB; Pillow's own ``convert`` would clip 16-bit
  grayscale to white. Float images ("F") in [0, 1] are scaled by 255; other float ranges
  have no convention and are refused.
* Alpha and transparency keys (RGBA, LA, PA, palettes or RGB/L with ``transparency``) are
  composited onto white.
* Palette, 1-bit, grayscale, CMYK, YCbCr, LAB and HSV are converted to RGB by Pillow.
* Animation: a file with more than one frame is refused (LEAF scores still images), except
  MPO, the camera JPEG whose extra frames are previews of frame 0.
* Size: a file over ``max_pixels`` is refused from its header, before anything is decoded
  (decompression bombs).
* A truncated or corrupt file fails here: nothing is ever decoded leniently.

Every failure is an :class:`~leaf_steps.core.errors.InputError` whose message starts with the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leaf_steps.core.errors import InputError

# Pillow's own bomb check raises at 2 x MAX_IMAGE_PIXELS with a message that names no file,
# and only warns below that. LEAF checks every image against its own, configurable limit
# (``max_pixels``) before decoding, so Pillow's global check is switched off.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 250_000_000  # a 200-megapixel phone sensor fits; 16-bit bombs do not
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
# Formats and modes a multimodal server decodes exactly as load_rgb does (Pillow's RGB conversion),
# so the file's own bytes can be sent: see sendable_as_is.
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about a file (nothing decoded)."""

    path: str
    format: str | None
    mode: str
    width: int  # upright (after the EXIF orientation)
    height: int
    orientation: int  # EXIF orientation tag, 1 when absent
    frames: int
    transparency: bool  # a transparency key or an alpha channel

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def mime(self) -> str | None:
        return MIME_TYPES.get(self.format or "")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: no orientation, the same in every stage
        return 1
    return value if value in _TRANSPOSE else 1


def _info(img: Image.Image, path: Path) -> ImageInfo:
    orientation = _orientation(img)
    width, height = img.size
    if orientation in (5, 6, 7, 8):  # turned by 90 degrees
        width, height = height, width
    transparency = img.mode in _ALPHA_MODES or "transparency" in img.info
    return ImageInfo(
        path=str(path),
        format=img.format,
        mode=img.mode,
        width=width,
        height=height,
        orientation=orientation,
        frames=int(getattr(img, "n_frames", 1) or 1),
        transparency=transparency,
    )


def _check(info: ImageInfo, max_pixels: int | None) -> None:
    if info.frames > 1 and info.format != "MPO":
        raise InputError(
            f"{info.path}: {info.format} image with {info.frames} frames; LEAF scores still images "
            "(save the frame you mean as its own file)"
        )
    if max_pixels is not None and info.pixels > max_pixels:
        raise InputError(
            f"{info.path}: {info.width}x{info.height} = {info.pixels:,} pixels exceeds the limit of "
            f"{max_pixels:,} (dataset.max_pixels); refused as a possible decompression bomb"
        )


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        return Image.open(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def probe(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Header facts of an image (format, mode, upright size, frames); refuses what load_rgb would refuse
    before decoding (not a readable image, animated, too many pixels)."""
    path = Path(path)
    with _open(path) as img:
        info = _info(img, path)
    _check(info, max_pixels)
    return info


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT or mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(
                f"{path}: {mode} image with values {arr.min()}..{arr.max()}; only 8- and 16-bit "
                "ranges have a conversion to 8 bits"
            )
        return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise InputError(f"{path}: floating-point image with values outside [0, 1]; no 8-bit convention for it")
        return Image.fromarray(np.round(arr * 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_on_white(img)
    return img.convert("RGB")


def load_rgb(
    path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB image by the rules of this module.

    ``draft_size`` (upright width, height) lets the JPEG decoder decode at a reduced scale no
    smaller than that size (DCT scaling); callers that downscale anyway use it to save time.
    """
    path = Path(path)
    with _open(path) as img:
        info = _info(img, path)
        _check(info, max_pixels)
        try:
            if draft_size is not None and img.format == "JPEG":
                w, h = draft_size
                img.draft("RGB", (h, w) if info.orientation in (5, 6, 7, 8) else (w, h))
            img.load()
            out = img
            if info.orientation in _TRANSPOSE:
                out = out.transpose(_TRANSPOSE[info.orientation])
            return _to_rgb(out, path)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def sendable_as_is(info: ImageInfo, max_side: int | None) -> bool:
    """True when the file's own bytes show a server exactly the pixels :func:`load_rgb` gives:
    JPEG, PNG or WebP, plain RGB or grayscale, no transparency, no EXIF rotation, one frame,
    and no side longer than ``max_side``."""
    return (
        info.mime is not None
        and info.mode in ("RGB", "L")
        and not info.transparency
        and info.orientation == 1
        and info.frames == 1
        and (max_side is None or max(info.width, info.height) <= max_side)
    )
