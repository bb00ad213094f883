"""Fuzz the dataset and scoring steps with damaged inputs: every outcome must be a clean result or a LeafError
(what the step prints as one ``error: ...`` line) naming the damaged file. A traceback (any other exception)
or a hang (more than HANG_S seconds) fails. Seeded and bounded: a few dozen cases, seconds.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from leaf_steps import prepare_dataset
from leaf_steps.core.errors import LeafError
from leaf_steps.fit_niqe import fit_niqe
from scoring_helpers import points_rows, write_image_list

SEED = 20260130
HANG_S = 30
N_IMAGES = 12
PROMPTS = {"point": "?", "pair": "?"}


class Hang(Exception):
    pass


def outcome(fn: Callable[[], object]) -> tuple[str, str]:
    """("ok", "") | ("error", message); anything else propagates (the test fails with its traceback)."""

    def alarm(*_):
        raise Hang(f"no answer within {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        fn()
        return "ok", ""
    except LeafError as exc:
        return "error", str(exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make_folder(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(SEED)
    images = root / "images"
    images.mkdir(parents=True)
    rows = ["image,mos"]
    for i in range(N_IMAGES):
        arr = np.clip(rng.normal(128, 50, (48, 64, 3)), 0, 255).astype(np.uint8)
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        name = f"{i:02d}.{fmt.lower()}"
        Image.fromarray(arr).save(images / name, format=fmt)
        rows.append(f"{name},{rng.uniform(1, 5):.3f}")
    (root / "mos.csv").write_text("\n".join(rows) + "\n")
    return images, root / "mos.csv"


# --------------------------------------------------------------------------- mutations


def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for pos in rng.integers(0, len(out), size=int(rng.integers(1, 12))):
        out[pos] = int(rng.integers(0, 256))
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, max(1, len(data) - 1)))]


IMAGE_MUTATIONS = {"flip": flip_bytes, "truncate": truncate, "empty": lambda d, r: b""}


def label_mutations(text: str, rng: np.random.Generator) -> dict[str, bytes]:
    lines = text.splitlines()
    header, body = lines[0], lines[1:]
    swapped = ["mos,image"] + [",".join(reversed(line.split(","))) for line in body]
    swapped_values = [header] + [",".join(reversed(line.split(","))) for line in body]
    k = int(rng.integers(0, len(body)))
    return {
        "truncated": text.encode()[: int(rng.integers(1, len(text)))],
        "utf16": text.encode("utf-16"),
        "latin1_names": text.replace("00.", "é0.").encode("latin-1"),
        "swapped_columns": "\n".join(swapped).encode(),
        "swapped_values": "\n".join(swapped_values).encode(),
        "huge_field": "\n".join([header, *body[:k], "x" * 2_000_000 + ",3", *body[k:]]).encode(),
        "nan": "\n".join(
            [header, *[ln if i != k else ln.rsplit(",", 1)[0] + ",nan" for i, ln in enumerate(body)]]
        ).encode(),
        "inf": "\n".join(
            [header, *[ln if i != k else ln.rsplit(",", 1)[0] + ",-inf" for i, ln in enumerate(body)]]
        ).encode(),
        "binary": bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),
        "header_only": (header + "\n").encode(),
        "empty": b"",
        "unquoted_comma": "\n".join([header, *body[:k], body[k].replace(",", ",x,", 1), *body[k + 1 :]]).encode(),
    }


# --------------------------------------------------------------------------- the steps


def run_prepare(root: Path, images: Path, mos: Path, on_bad_image: str = "fail") -> Path:
    out = root / "manifest.parquet"
    settings = {
        "name": "folder",
        "test_fraction": 0.25,
        "on_bad_image": on_bad_image,
        "options": {"images_dir": str(images), "mos_csv": str(mos)},
    }
    prepare_dataset.run(
        [
            "--dataset",
            "folder",
            "--resources-dir",
            str(root / "res"),
            "--settings",
            json.dumps(settings),
            "--out",
            str(out),
            "--workers",
            "1",
        ]
    )
    return out


@pytest.fixture(scope="module")
def niqe_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("niqe") / "model.npz"
    fit_niqe(None, {"backend": "niqe", "patch_size": 16}, out)
    return out


def run_scoring(root: Path, manifest: Path, model: Path) -> None:
    spec = {"backend": "niqe", "patch_size": 16, "model_path": str(model)}
    root.mkdir(parents=True, exist_ok=True)
    images = write_image_list(pl.read_parquet(manifest), root / "images.parquet")
    points_rows(images, spec, PROMPTS, {"batch_size": 4, "max_error_fraction": 0.0}, root)


# --------------------------------------------------------------------------- the cases


@pytest.mark.parametrize("case", range(8))
def test_damaged_images(tmp_path, niqe_model, case):
    rng = np.random.default_rng([SEED, case])
    images, mos = make_folder(tmp_path)
    victims = sorted(images.iterdir())
    damaged = []
    for path in rng.choice(victims, size=int(rng.integers(1, 3)), replace=False):
        kind = list(IMAGE_MUTATIONS)[int(rng.integers(0, len(IMAGE_MUTATIONS)))]
        path.write_bytes(IMAGE_MUTATIONS[kind](path.read_bytes(), rng))
        damaged.append(path)
    status, message = outcome(lambda: run_prepare(tmp_path, images, mos))
    if status == "error":  # a flip may also leave a file decodable: then the run is clean
        assert any(str(p) in message for p in damaged), message
    named = {p for p in damaged if str(p) in message}
    status, message = outcome(lambda: run_prepare(tmp_path, images, mos, on_bad_image="drop"))
    assert status == "ok", message
    report = (tmp_path / "bad_images.csv").read_text()
    assert all(str(p) in report for p in named)  # what failed the strict run is listed by the lenient one
    manifest = tmp_path / "manifest.parquet"
    kept = set(pl.read_parquet(manifest)["path"])
    # What the dataset stage kept, the teacher scores; the damaged files bypassing the check are named too.
    status, message = outcome(lambda: run_scoring(tmp_path, manifest, niqe_model))
    assert status == "ok", message
    raw = tmp_path / "raw_manifest.parquet"
    pl.DataFrame({"image_id": [p.name for p in victims], "path": [str(p) for p in victims]}).write_parquet(raw)
    status, message = outcome(lambda: run_scoring(tmp_path / "raw", raw, niqe_model))
    if status == "error":
        assert any(str(p) in message for p in damaged if str(p) not in kept), message


LABEL_CASES = [
    "truncated",
    "utf16",
    "latin1_names",
    "swapped_columns",
    "swapped_values",
    "huge_field",
    "nan",
    "inf",
    "binary",
    "header_only",
    "empty",
    "unquoted_comma",
]


@pytest.mark.parametrize("kind", LABEL_CASES)
def test_damaged_label_files(tmp_path, kind):
    rng = np.random.default_rng([SEED, LABEL_CASES.index(kind)])
    images, mos = make_folder(tmp_path)
    mos.write_bytes(label_mutations(mos.read_text(), rng)[kind])
    status, message = outcome(lambda: run_prepare(tmp_path, images, mos))
    if status == "error":
        assert str(mos) in message, message
        assert "Traceback" not in message and "truncate_ragged_lines" not in message
    else:  # e.g. a truncation that cut a row cleanly: the labels that remain must be the file's own values
        manifest = pl.read_parquet(tmp_path / "manifest.parquet")
        assert manifest["mos"].drop_nulls().is_finite().all()
