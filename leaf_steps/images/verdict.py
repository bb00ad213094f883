"""One image's decode verdict, as the dataset check's worker processes compute it (this module imports only
the decoder, so that a worker starts in a fraction of a second)."""

from __future__ import annotations

from leaf_steps.core.errors import InputError
from leaf_steps.images.decode import load_rgb

# (width, height, problem or None, final): ``final`` is False for a failure that may not happen again
# (anything but the decoder's own verdict, e.g. memory running out), which is therefore not cached.
Verdict = tuple[int | None, int | None, str | None, bool]


def decode_one(path: str, max_pixels: int) -> Verdict:
    """(width, height, None, True) when ``path`` decodes in full, else (None, None, problem naming the file, final)."""
    try:
        img = load_rgb(path, max_pixels=max_pixels)
        return img.width, img.height, None, True
    except InputError as exc:
        return None, None, str(exc), True
    except Exception as exc:  # noqa: BLE001 - a decoder crash is one file's problem, never the run's traceback
        return None, None, f"{path}: cannot decode image (unexpected {type(exc).__name__}: {exc})", False


def decode_chunk(args: tuple[list[str], int]) -> list[Verdict]:
    paths, max_pixels = args
    return [decode_one(p, max_pixels) for p in paths]
