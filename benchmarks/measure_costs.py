"""Measure the per-image costs that `leaf estimate-cost` turns into GPU-hours, on this machine.

    python benchmarks/measure_costs.py [--device auto|cpu|cuda] [--models convnext_base ...]
        [--base benchmarks/costs/h100_teacher_assumed_rtx3090_students_published.json] [--out costs.json] [--quick]

What it measures, side by side in one run:

1. the student data loader, on one CPU core: JPEG decode + resize to the 256 short side +
   the training augmentation + normalisation (``leaf_steps.training.data``'s own dataset and
   transforms) for JPEGs at the datasets' sizes, fitted as ``ms = fixed + per_megapixel * MP``;
2. the students on ``--device``: training images/s (forward + backward + AdamW step, a
   stage-1 batch of 96 = 32 points + 2 x 32 pair images, bf16 autocast on CUDA as
   ``student.amp``) and evaluation images/s (forward only), random weights, synthetic input
   at ``--crop``; and a job's start-up (a fresh interpreter importing the steps and building
   the model on the device);
3. forward FLOPs per image of each student, counted by ``torch.utils.flop_counter``.

It prints each figure and the ratios that decide a job's speed (GPU images/s over what one
loader worker decodes per second = the workers needed to keep the GPU busy), and writes a
costs JSON: the ``--base`` file with the measured keys replaced and their sources updated, so
``leaf estimate-cost --costs costs.json`` prices every config with this machine's figures.
Teacher costs are not measured here (that needs vLLM and the weights): the base file's
teacher keys are kept.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leaf_steps.training.data import ImageDataset, ImageRow
from leaf_steps.training.models import build_model
from leaf_steps.training.runtime import autocast, choose_device, use_amp
from leaf_steps.training.transforms import train_transform

SIZES = [(256, 256), (512, 384), (512, 512), (683, 512), (1024, 768), (1024, 1024)]
MODELS = ["resnet18", "resnet50", "convnext_tiny", "convnext_base", "convnext_large"]


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """A JPEG-realistic test image: smooth structure plus fine noise (decode cost depends on entropy)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(max(2, height // 32), max(2, width // 32), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def measure_loader(folder: Path, repeats: int, resize: int, crop: int) -> dict[str, float]:
    """Milliseconds per image through the training dataset, per size (one core, no cache)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for w, h in SIZES:
        paths = []
        for k in range(4):
            p = folder / f"img_{w}x{h}_{k}.jpg"
            buf = io.BytesIO()
            photo_like(w, h, k).save(buf, "JPEG", quality=92)
            p.write_bytes(buf.getvalue())
            paths.append(p)
        rows = [ImageRow(image_id=p.stem, path=p, row=i, manifest="benchmark") for i, p in enumerate(paths)]
        ds = ImageDataset(rows, train_transform(crop), resize, cache=None)
        ds[0]  # warm-up (imports, allocator)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            times.append((time.perf_counter() - start) / len(ds) * 1000)
        out[f"{w}x{h}"] = statistics.median(times)
    torch.set_num_threads(threads)
    return out


def fit_loader(ms: dict[str, float]) -> tuple[float, float]:
    mp = np.array([int(k.split("x")[0]) * int(k.split("x")[1]) / 1e6 for k in ms])
    y = np.array(list(ms.values()))
    slope, fixed = np.polyfit(mp, y, 1)
    return float(max(fixed, 0.0)), float(slope)


def forward_flops(model: torch.nn.Module, crop: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        model.eval()(torch.randn(2, 3, crop, crop))
    return fc.get_total_flops() / 2


def measure_startup(name: str, device: torch.device, repeats: int = 2) -> float:
    """Seconds a student job spends before its first batch: a fresh interpreter importing the
    step, building the model and moving it to the device (CUDA context included)."""
    code = (
        "import torch; from leaf_steps import calibrate, distill; from leaf_steps.training.models import build_model; "
        f"m = build_model({name!r}, False).to({str(device)!r}); "
        "torch.cuda.synchronize() if torch.cuda.is_available() else None"
    )
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_student(
    name: str, device: torch.device, batch: int, steps: int, warmup: int, crop: int
) -> dict[str, float]:
    model = build_model(name, pretrained=False)
    fwd_flops = forward_flops(model, crop)
    model = model.to(device)
    amp = use_amp(device, True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, crop, crop, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    for k in range(warmup + steps):
        if k == warmup:
            sync()
            start = time.perf_counter()
        with autocast(device, amp):
            loss = model(x).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    train_rate = steps * batch / (time.perf_counter() - start)
    model.eval()
    with torch.inference_mode():
        for k in range(warmup + steps):
            if k == warmup:
                sync()
                start = time.perf_counter()
            with autocast(device, amp):
                model(x)
        sync()
    eval_rate = steps * batch / (time.perf_counter() - start)
    return {"train_images_per_s": train_rate, "eval_images_per_s": eval_rate, "forward_gflop": fwd_flops / 1e9}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument(
        "--base", default=str(ROOT / "benchmarks" / "costs" / "h100_teacher_assumed_rtx3090_students_published.json")
    )
    ap.add_argument("--out", help="write the costs JSON here")
    ap.add_argument("--resize", type=int, default=256, help="student.resize (default %(default)s)")
    ap.add_argument("--crop", type=int, default=224, help="student.crop (default %(default)s)")
    ap.add_argument("--batch", type=int, help="images per step (default: 96 on CUDA, 16 on CPU)")
    ap.add_argument("--quick", action="store_true", help="few steps, small CPU batches (a smoke run)")
    args = ap.parse_args(argv)

    device = choose_device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (96 if gpu else (4 if args.quick else 16))
    steps, warmup = (30, 10) if gpu and not args.quick else ((2, 1) if args.quick else (4, 1))
    where = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {where}; torch {torch.__version__}; student batch {batch} at {args.crop} px, {steps} timed steps")

    with tempfile.TemporaryDirectory() as tmp:
        loader = measure_loader(Path(tmp), 2 if args.quick else 5, args.resize, args.crop)
    fixed, per_mp = fit_loader(loader)
    print(f"\nloader, one core (decode + resize {args.resize} + augment to {args.crop}), ms per image:")
    for k, v in loader.items():
        print(f"  {k:>10}: {v:6.2f} ms  ->  {1000 / v:6.1f} images/s per worker")
    print(f"  fit: {fixed:.2f} ms + {per_mp:.2f} ms/MP")

    students = {}
    print("\nstudents:")
    for name in args.models:
        r = measure_student(name, device, batch, steps, warmup, args.crop)
        r["startup_s"] = measure_startup(name, device)
        students[name] = r
        # Workers one GPU needs: its training rate over what one worker decodes (KonIQ-10k 1024x768).
        workers = r["train_images_per_s"] / (1000 / loader["1024x768"])
        print(
            f"  {name:>15}: train {r['train_images_per_s']:8.1f} img/s, eval {r['eval_images_per_s']:8.1f} img/s "
            f"(eval/train {r['eval_images_per_s'] / r['train_images_per_s']:.2f}); "
            f"{r['forward_gflop']:.2f} GFLOP/image; job start-up {r['startup_s']:.1f} s; "
            f"loader workers to feed training at 1024x768: {workers:.1f}"
        )

    if args.out:
        costs = json.loads(Path(args.base).read_text())
        sources = costs.setdefault("sources", {})
        stamp = f"measured by benchmarks/measure_costs.py on {where}, torch {torch.__version__}, batch {batch}"
        costs["loader_ms_fixed"], costs["loader_ms_per_megapixel"] = round(fixed, 3), round(per_mp, 3)
        sources["loader_ms"] = (
            f"measured by benchmarks/measure_costs.py, one core of {platform.machine()} "
            f"({', '.join(f'{k}: {v:.2f} ms' for k, v in loader.items())})"
        )
        for key in ("train_images_per_s", "eval_images_per_s"):
            costs[f"student_{key}"].update({n: round(r[key], 1) for n, r in students.items()})
            sources[f"student_{key}"] = stamp
        costs["student_job_startup_s"] = round(max(r["startup_s"] for r in students.values()), 2)
        sources["student_job_startup_s"] = f"{stamp}: a fresh interpreter importing the steps and building the model"
        costs["student_crop"] = args.crop
        costs["device"] = where
        Path(args.out).write_text(json.dumps(costs, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
