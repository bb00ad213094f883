"""Throughput of the vLLM teacher client, and the cost of preparing images for it.

Runs the fake server (tests/fake_vllm_server.py) as a separate process with a fixed
answer latency L and scores items through :class:`VllmTeacher` with concurrency C.
A client that adds nothing reaches C / L requests per second; the goal is >= 0.9 of
that. Small images are used there (their encodings are cached after the first use),
so the figure is about request handling, not image work.

Image work is measured apart: milliseconds to prepare one photo's data URL (cold cache)
with the default transport (a KonIQ-sized 1024x768 JPEG goes as is, after a validating
decode; a phone-sized 4032x3024 one is downscaled to 1024 px and sent as a lossless PNG)
and with the opt-in JPEG re-encode, and the cost of a cache hit (pairs reuse encodings). Each
is also shown as a fraction of the time budget per request at C / L (L / C), i.e.
the share of one CPU core encoding would take at that rate.

    .venv/bin/python benchmarks/bench_vllm_client.py [--latency 0.5] [--concurrency 32] [--seconds 4] [--repeat 2]

The client CPU per request is printed too: a Python HTTP client spends about 2 ms of
CPU per request (httpx itself, measured on a 2-core machine), so with many requests
in flight at small L the event loop, not the server, sets the pace; that figure says
how close to that limit a run was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leaf_steps.teachers import image_encoding
from leaf_steps.teachers.base import ImageRef, make_teacher

PROMPTS = {"point": "Rate the quality: Excellent, Good, Fair, Poor, or Bad.", "pair": "Which is better, A or B?"}


def start_fake_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "FAKE_VLLM_LATENCY_S": str(latency_s)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "fake_vllm_server.py"),
            "serve",
            "fake/vlm",
            "--port",
            "0",
            "--limit-mm-per-prompt",
            '{"image": 2}',
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip() + "/v1"


def throughput(teacher, refs: list[ImageRef], pairs: bool, batch: int | None = None) -> tuple[float, float, int]:
    """Requests per second, client CPU milliseconds per request, error rows.

    ``batch``: hand the items over in batches of this size, as the scoring driver does.
    """
    items = list(zip(refs, refs[1:] + refs[:1])) if pairs else refs
    score = teacher.score_pairs if pairs else teacher.score_points
    batch = batch or len(items)
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = [row for i in range(0, len(items), batch) for row in score(items[i : i + batch])]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    errors = sum(r.error is not None for r in rows)
    return len(rows) / elapsed, 1000 * cpu / len(rows), errors


def encode_ms(path: Path, settings: image_encoding.EncodingSettings, reps: int) -> float:
    times = []
    for _ in range(reps):
        image_encoding.clear_cache()
        t0 = time.perf_counter()
        image_encoding.image_data_url(path, settings)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="fake server answer latency L (s)")
    parser.add_argument("--concurrency", type=int, default=32, help="client max_concurrency C")
    parser.add_argument("--seconds", type=float, default=4.0, help="ideal duration of each throughput run")
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs per measure (the best is shown)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per encoding measurement")
    args = parser.parse_args()
    L, C = args.latency, args.concurrency
    ideal = C / L
    n = max(C, int(ideal * args.seconds))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = Image.fromarray(skdata.astronaut())
        small = np.asarray(base.resize((64, 64)), dtype=np.float64)
        refs = []
        for i in range(16):  # distinct small images (16 exposures); encodings cached after the warm-up
            path = tmp / f"small_{i}.png"
            Image.fromarray(np.clip(small * (0.4 + i / 20), 0, 255).astype(np.uint8)).save(path)
            refs.append(ImageRef(str(i), str(path)))
        refs = (refs * (n // len(refs) + 1))[:n]
        koniq = tmp / "photo_1024x768.jpg"
        phone = tmp / "photo_4032x3024.jpg"
        base.resize((1024, 768), Image.Resampling.BICUBIC).save(koniq, quality=92)
        base.resize((4032, 3024), Image.Resampling.BICUBIC).save(phone, quality=92)

        proc, base_url = start_fake_server(L)
        try:
            spec = {"backend": "vllm", "model": "fake/vlm", "base_url": base_url, "max_concurrency": C}
            with make_teacher(spec, PROMPTS) as teacher:
                teacher.score_points(refs[:C])  # warm-up: server checks, encodings, connections
                # Best of `repeat` runs: the machine may be shared, and others' load only slows a run down.
                point_rate, point_cpu, point_err = max(
                    throughput(teacher, refs, pairs=False) for _ in range(args.repeat)
                )
                pair_rate, pair_cpu, pair_err = max(throughput(teacher, refs, pairs=True) for _ in range(args.repeat))
                batched_rate, batched_cpu, batched_err = max(
                    throughput(teacher, refs, pairs=False, batch=2 * C) for _ in range(args.repeat)
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)

        # The default transport sends the 1024x768 JPEG as is (read + a validating decode) and the phone
        # photo as a lossless PNG of its 1024 px downscale; the lossy JPEG re-encode is the opt-in.
        settings = image_encoding.EncodingSettings(max_side=1024, transport="auto")
        lossy = image_encoding.EncodingSettings(max_side=1024, transport="jpeg", quality=90)
        koniq_ms = encode_ms(koniq, settings, args.reps)
        phone_ms = encode_ms(phone, settings, args.reps)
        koniq_jpeg_ms = encode_ms(koniq, lossy, args.reps)
        phone_jpeg_ms = encode_ms(phone, lossy, args.reps)
        image_encoding.image_data_url(koniq, settings)
        t0 = time.perf_counter()
        for _ in range(1000):
            image_encoding.image_data_url(koniq, settings)
        hit_ms = time.perf_counter() - t0  # 1000 hits: seconds == ms per hit

    budget_ms = 1000 * L / C
    print(
        f"vLLM client benchmark: fake server latency L={L:g}s, concurrency C={C}, ideal C/L={ideal:.1f} req/s, "
        f"{n} items per run, best of {args.repeat}; CPU cores: {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'measure':<50}{'value':>10}  {'ratio':>22}")
    for kind, rate, cpu_ms, errors in (
        ("points", point_rate, point_cpu, point_err),
        ("pairs", pair_rate, pair_cpu, pair_err),
        (f"points, driver batches of {2 * C},", batched_rate, batched_cpu, batched_err),
    ):
        print(
            f"{kind + ' throughput (req/s)':<50}{rate:>10.1f}  {rate / ideal:>10.3f} of C/L (goal 0.9)"
            + (f"  [{errors} error rows]" if errors else "")
        )
        print(
            f"{kind + ' client CPU (ms/request)':<50}{cpu_ms:>10.2f}  {cpu_ms / budget_ms:>10.3f} of L/C"
            f" = {budget_ms:.1f} ms"
        )
    for label, ms in (
        ("1024x768 JPEG photo, sent as is", koniq_ms),
        ("4032x3024 JPEG photo -> 1024 px lossless PNG", phone_ms),
        ("1024x768 JPEG photo, jpeg transport", koniq_jpeg_ms),
        ("4032x3024 JPEG photo -> 1024 px, jpeg transport", phone_jpeg_ms),
    ):
        print(f"{label + ' (ms/image)':<50}{ms:>10.1f}  {ms / budget_ms:>10.3f} of L/C = {budget_ms:.1f} ms")
    print(f"{'cached encoding, pair reuse (ms/image)':<50}{hit_ms:>10.3f}  {hit_ms / koniq_ms:>10.4f} of a cold encode")


if __name__ == "__main__":
    main()
