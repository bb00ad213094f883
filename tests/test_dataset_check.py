"""The dataset stage's image check: every image decoded in full, every problem collected before the
step decides, fail (default) or drop with a report, verdicts cached by file fingerprint, in parallel.

The steps run as a user runs them (``python -m leaf_steps.prepare_dataset``) where the test is about
what the user sees: one ``error: ...`` message naming every bad file, and no traceback.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from leaf_steps import prepare_dataset
from leaf_steps.core.errors import ConfigError
from leaf_steps.core.io import read_provenance, write_json, write_parquet
from leaf_steps.images.check import Limits, check_images, decode_all
from leaf_steps.images.verdict import decode_chunk

REPO = Path(__file__).resolve().parent.parent


def photo(path: Path, size: tuple[int, int] = (96, 72), seed: int = 0, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.3, 1.0, 3)[None, None, :]
    arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb), with almost no data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def broken_folder(root: Path) -> dict[str, str]:
    """Twelve good photos and one of each problem; returns image_id -> the words its problem must contain."""
    for i in range(12):
        photo(root / f"good_{i:02d}.jpg", seed=i)
    data = photo(root / "truncated.jpg", seed=50).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "not_an_image.jpg").write_text("<html>a download that went wrong</html>")
    photo(root / "icon.png", size=(16, 16))
    photo(root / "banner.png", size=(1200, 40))
    bomb_png(root / "bomb.png")
    return {
        "truncated.jpg": "cannot decode image",
        "not_an_image.jpg": "not a readable image",
        "icon.png": "dataset.min_side",
        "banner.png": "dataset.max_aspect_ratio",
        "bomb.png": "decompression bomb",
    }


def folder_settings(images: Path, **extra) -> dict:
    return {"name": "folder", "split_seed": 0, "test_fraction": 0.2, "options": {"images_dir": str(images)}, **extra}


def run_prepare(tmp_path: Path, settings: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "leaf_steps.prepare_dataset",
        "--dataset",
        settings["name"],
        "--resources-dir",
        str(tmp_path / "res"),
        "--settings",
        json.dumps(settings),
        "--out",
        str(tmp_path / "run/manifest.parquet"),
        *extra,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def test_every_problem_is_named_at_once_without_a_traceback(tmp_path):
    images = tmp_path / "photos"
    expected = broken_folder(images)
    proc = run_prepare(tmp_path, folder_settings(images))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = proc.stderr[proc.stderr.index("error: ") :]
    assert error.startswith(f"error: {len(expected)} of {12 + len(expected)} images cannot be used")
    for name, words in expected.items():
        line = next(ln for ln in error.splitlines() if f"{images / name}:" in ln)
        assert words in line, line
    assert "dataset.on_bad_image: drop" in error
    assert not (tmp_path / "run/manifest.parquet").exists()


def test_drop_leaves_them_out_and_reports_them(tmp_path):
    images = tmp_path / "photos"
    expected = broken_folder(images)
    report = tmp_path / "run/bad_images.csv"
    proc = run_prepare(tmp_path, folder_settings(images, on_bad_image="drop"), "--bad-images", str(report))
    assert proc.returncode == 0, proc.stderr
    manifest = pl.read_parquet(tmp_path / "run/manifest.parquet")
    assert sorted(manifest["image_id"]) == [f"good_{i:02d}.jpg" for i in range(12)]
    assert manifest["width"].to_list() == [96] * 12 and manifest["height"].to_list() == [72] * 12
    rows = list(csv.DictReader(report.open()))
    assert {Path(r["path"]).name: r["problem"] for r in rows}.keys() == expected.keys()
    for r in rows:
        assert expected[r["image_id"]] in r["problem"] and r["problem"].startswith(r["path"])
    check = read_provenance(tmp_path / "run/manifest.parquet")["image_check"]
    assert check["dropped"] == len(expected) and check["report"] == str(report)
    # The log says how many were left out and where the list is.
    assert f"{len(expected)} of {12 + len(expected)} images left out" in proc.stderr and str(report) in proc.stderr


def test_clean_folder_writes_an_empty_report(tmp_path):
    images = tmp_path / "photos"
    for i in range(5):
        photo(images / f"{i}.png", seed=i)
    proc = run_prepare(tmp_path, folder_settings(images))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run/bad_images.csv").read_text() == "image_id,path,problem,labelled,split\n"


def test_pixel_limit_is_configurable(tmp_path):
    images = tmp_path / "photos"
    for i in range(3):
        photo(images / f"{i}.png", size=(96, 72), seed=i)
    photo(images / "big.png", size=(400, 300))
    proc = run_prepare(tmp_path, folder_settings(images, max_pixels=100_000))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"{images / 'big.png'}: 400x300 = 120,000 pixels exceeds the limit of 100,000 (dataset.max_pixels)"
        in proc.stderr
    )
    # Raising the limit above what every later stage's decoder accepts is refused at once.
    with pytest.raises(ConfigError, match="dataset.max_pixels: must be an integer in 1..250,000,000"):
        prepare_dataset.run(
            [
                "--dataset",
                "folder",
                "--resources-dir",
                str(tmp_path / "res"),
                "--settings",
                json.dumps(folder_settings(images, max_pixels=10**9)),
                "--out",
                str(tmp_path / "m.pq"),
            ]
        )


def test_size_limits_are_configurable(tmp_path):
    images = tmp_path / "photos"
    photo(images / "small.png", size=(40, 40))
    photo(images / "wide.png", size=(300, 60))
    verdicts = check_images(sorted(images.iterdir()), Limits(min_side=32, max_aspect_ratio=4.0)).verdicts
    assert [v.ok for v in verdicts] == [True, False]  # small.png, wide.png (5:1)
    verdicts = check_images(sorted(images.iterdir()), Limits(min_side=48, max_aspect_ratio=6.0)).verdicts
    assert [v.ok for v in verdicts] == [False, True]


def test_verdicts_are_cached_by_fingerprint(tmp_path):
    images = tmp_path / "photos"
    for i in range(6):
        photo(images / f"{i}.jpg", seed=i)
    settings = folder_settings(images)

    def prepared() -> dict:
        prepare_dataset.run(
            [
                "--dataset",
                "folder",
                "--resources-dir",
                str(tmp_path / "res"),
                "--settings",
                json.dumps(settings),
                "--out",
                str(tmp_path / "m.parquet"),
                "--workers",
                "1",
            ]
        )
        return read_provenance(tmp_path / "m.parquet")["image_check"]

    assert (prepared()["decoded"], prepared()["decoded"]) == (6, 0)
    photo(images / "new.jpg", seed=9)  # added
    photo(images / "0.jpg", size=(100, 72), seed=0)  # edited (size changes)
    data = (images / "1.jpg").read_bytes()
    (images / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated in place
    settings["on_bad_image"] = "drop"
    check = prepared()
    assert (check["decoded"], check["from_cache"], check["dropped"]) == (3, 4, 1)
    # A changed pixel limit is a different check: everything is decoded again.
    settings["max_pixels"] = 10_000_000
    assert prepared()["decoded"] == 7


def test_parallel_check_gives_the_serial_verdicts(tmp_path):
    images = tmp_path / "photos"
    paths = [photo(images / f"{i:03d}.jpg", size=(64, 48), seed=i) for i in range(70)]
    data = paths[33].read_bytes()
    paths[33].write_bytes(data[:200])
    serial = check_images(paths, Limits(), workers=1)
    parallel = check_images(paths, Limits(), workers=2)
    assert parallel.verdicts == serial.verdicts
    assert [i for i, v in enumerate(parallel.verdicts) if not v.ok] == [33]


def test_a_damaged_cache_costs_a_recheck_only(tmp_path):
    images = tmp_path / "photos"
    paths = [photo(images / f"{i}.jpg", seed=i) for i in range(3)]
    cache = tmp_path / "cache.parquet"
    check_images(paths, Limits(), cache=cache)
    cache.write_bytes(b"garbage")
    again = check_images(paths, Limits(), cache=cache)
    assert again.decoded == 3 and all(v.ok for v in again.verdicts)


def test_manifest_splits_are_drawn_before_dropping(tmp_path):
    """Fixing a broken file later brings it back without moving any other image between splits."""
    images = tmp_path / "photos"
    rows = []
    for i in range(30):
        photo(images / f"{i:02d}.jpg", seed=i)
        rows.append(f"{i:02d}.jpg,{i / 10:.1f}")
    (tmp_path / "mos.csv").write_text("image,mos\n" + "\n".join(rows) + "\n")
    settings = folder_settings(images, on_bad_image="drop")
    settings["options"]["mos_csv"] = str(tmp_path / "mos.csv")
    argv = [
        "--dataset",
        "folder",
        "--resources-dir",
        str(tmp_path / "res"),
        "--settings",
        json.dumps(settings),
        "--out",
        str(tmp_path / "m.parquet"),
    ]
    clean = dict(prepare_dataset.run(argv).select("image_id", "split").iter_rows())
    (images / "05.jpg").write_text("broken")
    dropped = dict(prepare_dataset.run(argv).select("image_id", "split").iter_rows())
    assert "05.jpg" not in dropped
    assert all(clean[k] == v for k, v in dropped.items())


def test_artifacts_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "shared.parquet", {"step": "test"})
        write_json(tmp_path / "shared.json", {"a": 1})
        os.umask(0o077)
        write_json(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "shared.parquet") == 0o644 and mode(tmp_path / "shared.json") == 0o644
    assert mode(tmp_path / "private.json") == 0o600


def test_missing_file_in_the_manifest_is_one_named_problem(tmp_path):
    verdicts = check_images([tmp_path / "gone.jpg"], Limits()).verdicts
    assert verdicts[0].problem == f"{tmp_path / 'gone.jpg'}: image file not found"


def test_a_run_says_what_it_left_out_and_where_the_list_is(tmp_path):
    """Through Snakemake: with fail the run's output shows every bad file (the failed job's log); with drop the
    run ends with how many were left out and where the list is."""
    import yaml

    images = tmp_path / "photos"
    broken_folder(images)
    cfg = yaml.safe_load((REPO / "config/folder_example.yaml").read_text())
    cfg["run_name"] = "bad"
    cfg["dataset"]["options"] = {"images_dir": str(images)}
    cfg["calibration"]["ratios"] = [0]

    def snakemake(on_bad_image: str) -> subprocess.CompletedProcess:
        cfg["dataset"]["on_bad_image"] = on_bad_image
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                str(tmp_path),
                "--configfile",
                str(tmp_path / "c.yaml"),
                "--cores",
                "2",
                "results/bad/dataset/manifest.parquet",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )

    failed = snakemake("fail")
    assert failed.returncode != 0
    out = failed.stdout + failed.stderr
    assert "error: 5 of 17 images cannot be used (dataset.on_bad_image: fail)" in out
    assert f"{images / 'bomb.png'}: 100000x100000 = 10,000,000,000 pixels exceeds the limit" in out
    dropped = snakemake("drop")
    assert dropped.returncode == 0, dropped.stderr[-3000:]
    assert (
        "LEAF dataset: 5 image(s) were left out as unusable (dataset.on_bad_image: drop); the list, with each "
        "file's problem: results/bad/dataset/bad_images.csv"
    ) in dropped.stderr


def crash_on_marked(args):
    """A decoder that kills its process on files named *crash* (as a native fault on a hostile file would)."""
    paths, _ = args
    if any("crash" in Path(p).name for p in paths):
        os._exit(3)
    return decode_chunk(args)


def test_a_decoder_crash_names_the_file_and_loses_nothing_else(tmp_path):
    paths = [str(photo(tmp_path / f"{i:03d}.jpg", size=(40, 40), seed=i)) for i in range(70)]
    paths[40] = str(photo(tmp_path / "crash.jpg", size=(40, 40)))
    verdicts = decode_all(paths, 10**8, workers=2, chunk_fn=crash_on_marked)
    assert len(verdicts) == 70
    assert verdicts[40][2] == f"{paths[40]}: cannot decode image (the decoder crashed its process)"
    assert verdicts[40][3] is False  # not cached: a crash is checked again next time
    assert all(v[2] is None and (v[0], v[1]) == (40, 40) for i, v in enumerate(verdicts) if i != 40)
