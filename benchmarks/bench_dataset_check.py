#!/usr/bin/env python3
"""The dataset stage's image check on N generated 1024x768 JPEGs (KonIQ-10k's size), side by side:

* header read only (what the dataset stage did before: ``probe``, which passes truncated files);
* full decode by the one decoder (``load_rgb``), serially, then over W worker processes (cold cache);
* the same check again with the verdict cache filled (a rerun: only fingerprints are read);
* the dataset fingerprint the workflow takes at DAG-build time (names, sizes, mtimes);
* the whole ``prepare_dataset`` step on the folder, cold and cached.

    .venv/bin/python benchmarks/bench_dataset_check.py                 # 10,000 images, all CPUs
    .venv/bin/python benchmarks/bench_dataset_check.py --n 2000 --workers 2 --dir /tmp/check_bench

The images are photos from scikit-image, scaled to 1024x768, shifted and re-toned per image, saved as
JPEG quality 90 (about 170 KB each; KonIQ-10k's are of that order). They are generated once into --dir and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from PIL import Image

from leaf_steps.datasets.fingerprint import dataset_fingerprint
from leaf_steps.images import probe
from leaf_steps.images.bundled import PRISTINE_PHOTOS, photo_path
from leaf_steps.images.check import Limits, check_images, default_workers

SIZE = (1024, 768)


_BASES: dict[str, np.ndarray] = {}


def _base(name: str) -> np.ndarray:
    """The photo at 1024x768 plus a margin to shift in (one per worker process and photo)."""
    if name not in _BASES:
        with Image.open(photo_path(name)) as im:
            big = im.convert("RGB").resize((SIZE[0] + 64, SIZE[1] + 48), Image.Resampling.BILINEAR)
        _BASES[name] = np.asarray(big, dtype=np.int16)
    return _BASES[name]


def _make(args: tuple[int, str]) -> int:
    i, folder = args
    rng = np.random.default_rng(i)
    base = _base(PRISTINE_PHOTOS[i % len(PRISTINE_PHOTOS)])
    dx, dy = (int(v) for v in rng.integers(0, 64, 2))
    arr = base[dy : dy + SIZE[1], dx : dx + SIZE[0]] + rng.integers(-40, 41, 3, dtype=np.int16)  # shifted, re-toned
    arr += rng.integers(-3, 4, arr.shape, dtype=np.int16)  # and a little grain: no two files alike
    path = Path(folder) / f"{i // 1000:02d}" / f"img_{i:05d}.jpg"
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path.stat().st_size


def ensure_images(folder: Path, n: int, workers: int) -> list[Path]:
    paths = [folder / f"{i // 1000:02d}" / f"img_{i:05d}.jpg" for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        for sub in {p.parent for p in paths}:
            sub.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_make, [(i, str(folder)) for i in todo], chunksize=32))
        print(f"generated {len(todo)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return paths


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_step(folder: Path, resources: Path, out: Path, workers: int) -> float:
    from leaf_steps import prepare_dataset

    settings = {"name": "folder", "options": {"images_dir": str(folder)}}
    t, _ = timed(
        lambda: prepare_dataset.run(
            [
                "--dataset",
                "folder",
                "--resources-dir",
                str(resources),
                "--settings",
                json.dumps(settings),
                "--out",
                str(out),
                "--workers",
                str(workers),
            ]
        )
    )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "leaf_bench_check")
    ap.add_argument(
        "--serial-sample",
        type=int,
        default=1000,
        help="images decoded serially to estimate the one-process rate (the full set takes minutes)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    folder = a.dir / "images"
    paths = ensure_images(folder, a.n, a.workers)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    for p in paths:  # warm the page cache: the figures are decode cost, not disk reads
        p.read_bytes()
    sample = paths[: a.serial_sample]

    t_header, _ = timed(lambda: [probe(p) for p in paths])
    t_serial_sample, _ = timed(lambda: check_images(sample, Limits(), workers=1))
    t_serial = t_serial_sample * len(paths) / len(sample)
    cache = a.dir / "cache.parquet"
    cache.unlink(missing_ok=True)
    t_cold, cold = timed(lambda: check_images(paths, Limits(), cache=cache, workers=a.workers))
    t_cached, cached = timed(lambda: check_images(paths, Limits(), cache=cache, workers=a.workers))
    assert cold.decoded == len(paths) and cached.decoded == 0 and not cold.problems
    t_fp, fp = timed(lambda: dataset_fingerprint("folder", {"options": {"images_dir": str(folder)}}, a.dir))

    resources = a.dir / "resources"
    shutil.rmtree(resources, ignore_errors=True)
    t_step_cold = run_step(folder, resources, a.dir / "manifest.parquet", a.workers)
    t_step_cached = run_step(folder, resources, a.dir / "manifest.parquet", a.workers)

    n = len(paths)
    rows = [
        ("header read only (before: passes truncated files)", t_header, f"{1e3 * t_header / n:.2f} ms/image", 1.0),
        (
            f"full decode, 1 process (from a sample of {len(sample)})",
            t_serial,
            f"{1e3 * t_serial / n:.2f} ms/image",
            t_serial / t_header,
        ),
        (f"full decode, {a.workers} worker processes, cold", t_cold, f"{n / t_cold:.0f} images/s", t_cold / t_header),
        ("same check again, verdicts cached", t_cached, f"{1e3 * t_cached / n:.3f} ms/image", t_cached / t_header),
        ("dataset fingerprint (DAG build)", t_fp, f"{1e3 * t_fp / n:.3f} ms/image", t_fp / t_header),
        ("prepare_dataset step, cold", t_step_cold, "", t_step_cold / t_header),
        ("prepare_dataset step, cached", t_step_cached, "", t_step_cached / t_header),
    ]
    print(
        f"{n} JPEGs {SIZE[0]}x{SIZE[1]} ({mb / n * 1e3:.0f} KB each), {a.workers} worker(s), "
        f"{os.cpu_count()} CPUs on the machine; fingerprint {fp}"
    )
    print("| measure | seconds | rate | x header read |\n|---|---|---|---|")
    for name, t, rate, ratio in rows:
        print(f"| {name} | {t:.2f} | {rate} | {ratio:.2f} |")
    print(f"parallel speed-up {t_serial / t_cold:.2f}x on {a.workers} workers; cached/cold {t_cached / t_cold:.4f}")
    if a.json:
        a.json.write_text(json.dumps({name: t for name, t, _, _ in rows} | {"n": n, "workers": a.workers}, indent=2))


if __name__ == "__main__":
    main()
