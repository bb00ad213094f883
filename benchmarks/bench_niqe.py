"""Speed of the NIQE stand-in teacher (leaf_steps.teachers.niqe_model), side by side with decoding the same image.

The stand-in scores every demo image and every pair, so it should cost about as much as reading
the image, not orders of magnitude more. For each size the script prints the best of N timings of
``niqe_score`` on a bundled photo, the best of N timings of decoding the same photo from a PNG
(``leaf_steps.images.load_rgb``), and their ratio; and the NIQE time per megapixel, which stays
flat when the patch statistics are vectorised (it would grow with the size if they were not).

    .venv/bin/python benchmarks/bench_niqe.py [--sizes 96 160 512 1024] [--repeat 5]

(This used to be a wall-clock assertion in tests/test_niqe.py; timings belong here, where they are
read as ratios on the machine at hand, not in a test that flakes on a loaded one.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from leaf_steps.images import load_rgb
from leaf_steps.make_demo_dataset import load_reference
from leaf_steps.teachers.niqe_model import fit_pristine_model, niqe_score

FIT_REFS = ["rocket", "motorcycle_left", "hubble_deep_field", "moon", "coins", "grass", "gravel", "brick"]


def best_of(repeat: int, fn, *args) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 160, 512, 1024])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--patch", type=int, default=32)
    args = ap.parse_args(argv)
    model = fit_pristine_model([load_reference(n, 160) for n in FIT_REFS], patch_size=args.patch)
    print("| size | NIQE ms | decode ms | NIQE / decode | NIQE ms per megapixel |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            image = load_reference("astronaut", size)
            path = Path(tmp) / f"astronaut_{size}.png"
            Image.fromarray(image).save(path)
            niqe_score(image, model)  # warm-up: first-call imports and caches
            niqe_s = best_of(args.repeat, niqe_score, image, model)
            decode_s = best_of(args.repeat, load_rgb, path)
            megapixels = image.shape[0] * image.shape[1] / 1e6
            print(
                f"| {size} | {niqe_s * 1e3:.1f} | {decode_s * 1e3:.2f} | {niqe_s / decode_s:.1f} | "
                f"{niqe_s * 1e3 / megapixels:.0f} |"
            )


if __name__ == "__main__":
    main()
