"""One decoder for every stage (leaf_steps.images): real small files in the formats users have.

Each format either gives the same pixels in the dataset stage (size), both MLLM teacher paths, the
NIQE stand-in and the student, or fails everywhere with an error naming the file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leaf_steps.core.errors import InputError
from leaf_steps.datasets.common import image_size, list_images
from leaf_steps.images import load_rgb, probe, sendable_as_is
from leaf_steps.teachers.image_encoding import load_image as teacher_view
from leaf_steps.teachers.niqe_model import read_luminance
from leaf_steps.training.data import ImageRow, load_image

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)  # 20 wide, 12 high


def png16(path: Path, arr: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """name -> (file, the RGB pixels every stage must see)."""
    d = tmp_path_factory.mktemp("formats")
    out: dict[str, tuple[Path, np.ndarray]] = {}

    Image.fromarray(PIXELS).save(d / "plain.png")
    out["plain"] = (d / "plain.png", PIXELS)

    # EXIF orientation 6: the stored pixels are turned; upright = rotate the stored ones 90 degrees clockwise.
    stored = Image.fromarray(PIXELS)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(d / "rotated.jpg", quality=95, exif=exif.tobytes())
    with Image.open(d / "rotated.jpg") as im:
        decoded = np.asarray(im.convert("RGB"))
    out["exif_rotated"] = (d / "rotated.jpg", np.rot90(decoded, k=-1))

    gray16 = (RNG.integers(0, 65536, size=(12, 20))).astype(np.uint16)
    png16(d / "gray16.png", gray16, color_type=0)
    g8 = (gray16 >> 8).astype(np.uint8)
    out["gray16"] = (d / "gray16.png", np.stack([g8] * 3, axis=-1))

    rgb16 = (RNG.integers(0, 65536, size=(12, 20, 3))).astype(np.uint16)
    png16(d / "rgb16.png", rgb16, color_type=2)
    out["rgb16"] = (d / "rgb16.png", (rgb16 >> 8).astype(np.uint8))

    palette = Image.fromarray(PIXELS).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(d / "palette.gif")
    out["palette_gif"] = (d / "palette.gif", np.asarray(palette.convert("RGB")))

    cmyk = Image.fromarray(PIXELS).convert("CMYK")
    cmyk.save(d / "cmyk.jpg", quality=95)
    with Image.open(d / "cmyk.jpg") as im:
        out["cmyk"] = (d / "cmyk.jpg", np.asarray(im.convert("RGB")))

    alpha = RNG.integers(0, 256, size=(12, 20, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([PIXELS, alpha], axis=-1), "RGBA").save(d / "rgba.png")
    a = alpha.astype(np.float64) / 255
    on_white = PIXELS * a + 255 * (1 - a)
    out["rgba"] = (d / "rgba.png", on_white)  # compared within 1 (Pillow's integer compositing)

    gray = PIXELS[..., 0]
    Image.fromarray(gray, "L").save(d / "gray.png")
    out["grayscale"] = (d / "gray.png", np.stack([gray] * 3, axis=-1))
    return out


def stage_views(path: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """The RGB pixels each stage decodes from ``path`` (no resizing)."""
    row = ImageRow("x", path, 0, str(tmp_path / "manifest.parquet"))
    views = {
        "images.load_rgb": np.asarray(load_rgb(path)),
        "mllm teachers (vLLM encoding, transformers)": np.asarray(teacher_view(path, max_side=4096)),
        "student": np.asarray(load_image(row)),
    }
    return views


@pytest.mark.parametrize(
    "name", ["plain", "exif_rotated", "gray16", "rgb16", "palette_gif", "cmyk", "rgba", "grayscale"]
)
def test_every_stage_sees_the_same_upright_8bit_pixels(files, name, tmp_path):
    path, expected = files[name]
    views = stage_views(path, tmp_path)
    reference = views["images.load_rgb"]
    assert reference.dtype == np.uint8 and reference.ndim == 3 and reference.shape[2] == 3
    assert np.abs(reference.astype(float) - expected).max() <= (1 if name == "rgba" else 0), name
    for stage, view in views.items():
        assert np.array_equal(view, reference), f"{name}: {stage} differs from images.load_rgb"
    # The stand-in teacher reads the luminance of the same pixels; the dataset records their upright size.
    assert np.array_equal(read_luminance(path), np.asarray(Image.fromarray(reference).convert("L"), dtype=float))
    assert image_size(path) == (reference.shape[1], reference.shape[0])


def test_sixteen_bit_gray_is_scaled_not_clipped(files):
    path, _ = files["gray16"]
    with Image.open(path) as im:
        clipped = np.asarray(im.convert("L"))
    ours = np.asarray(load_rgb(path))[..., 0]
    assert (clipped == 255).mean() > 0.9  # what Pillow's convert alone does
    assert 50 < ours.mean() < 200  # uniform 16-bit noise -> mid-grey on average


def test_exif_rotation_swaps_width_and_height(files):
    path, _ = files["exif_rotated"]
    info = probe(path)
    assert (info.width, info.height, info.orientation) == (12, 20, 6)


def test_animated_gif_is_refused_by_name(tmp_path):
    frames = [Image.fromarray(PIXELS), Image.fromarray(255 - PIXELS)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    for load in (load_rgb, probe, lambda p: teacher_view(p, 64), read_luminance, image_size):
        with pytest.raises(InputError, match=r"anim\.gif: GIF image with 2 frames"):
            load(path)


def test_truncated_jpeg_fails_on_full_decode(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.tile(PIXELS, (20, 20, 1))).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    probe(path)  # the header is intact: a header-only check passes
    with pytest.raises(InputError, match=r"cut\.jpg: cannot decode image .*truncated"):
        load_rgb(path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(InputError, match=r"bomb\.png: 4000x3000 = 12,000,000 pixels exceeds the limit of 1,000,000"):
        load_rgb(path, max_pixels=1_000_000)
    assert load_rgb(path).size == (4000, 3000)


def test_not_an_image_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.jpg: not a readable image"):
        load_rgb(path)
    with pytest.raises(InputError, match=r"missing\.png: image file not found"):
        load_rgb(tmp_path / "missing.png")


def test_original_bytes_only_when_they_decode_to_the_same_pixels(files):
    assert sendable_as_is(probe(files["plain"][0]), 1024)
    assert sendable_as_is(probe(files["grayscale"][0]), 1024)
    assert not sendable_as_is(probe(files["plain"][0]), 16)  # must be downscaled
    for name in ("exif_rotated", "gray16", "palette_gif", "cmyk", "rgba"):
        assert not sendable_as_is(probe(files[name][0]), 1024), name


def test_gif_and_other_pillow_formats_are_listed_by_the_folder_scan(files, tmp_path):
    for name in ("palette_gif", "plain", "cmyk"):
        src = files[name][0]
        (tmp_path / src.name).write_bytes(src.read_bytes())
    Image.fromarray(PIXELS).save(tmp_path / "frame.ppm")
    (tmp_path / "readme.txt").write_text("not an image")
    found = {p.name for p in list_images(tmp_path)}
    assert found == {"palette.gif", "plain.png", "cmyk.jpg", "frame.ppm"}
