"""One image's decode verdict, as the dataset check's worker processes compute it (this module imports only
the decoder, so that a worker starts in a fraction of a second)."""

from __future__ import annotations

from leaf_steps.errors import InputError
from leaf_steps.images.decode import load_rgb

Verdict = tuple[int | None, int | None, str | None]


def decode_one(path: str, max_pixels: int) -> Verdict:
    """(width, height, None) when ``path`` decodes in full, else (None, None, problem naming the file)."""
    try:
        img = load_rgb(path, max_pixels=max_pixels)
        return img.width, img.height, None
    except InputError as exc:
        return None, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder crash is one file's problem, never the run's traceback
        return None, None, f"{path}: cannot decode image (unexpected {type(exc).__name__}: {exc})"


def decode_chunk(args: tuple[list[str], int]) -> list[Verdict]:
    paths, max_pixels = args
    return [decode_one(p, max_pixels) for p in paths]
