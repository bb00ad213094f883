"""Throughput of `leaf predict`, side by side in one run on one device, as ratios.

    python benchmarks/bench_predict.py [--device auto|cpu|cuda] [--models resnet18 convnext_base]
        [--images 64] [--size 1024x768] [--workers N] [--batch N] [--no-onnx] [--quick] [--json out.json]

For each student (random weights, the paper's input: shorter side 256, center crop 224):

* bound: the pure forward rate on pre-made uint8 batches (normalisation on the device + forward,
  channels_last, bf16 autocast on CUDA): what scoring could reach if decoding were free;
* end to end: ``leaf predict`` on a folder of JPEGs (``--size``, default 1024x768, KonIQ-10k's
  size), from the first batch to the written table (the step's own ``score_items``: loader
  workers, decode, transform, forward, partial files), and the ratio to the bound (goal on CPU:
  >= 0.8). A job's start-up (imports, model build) is printed apart;
* loader: the same DataLoader with no model (images/s the workers decode and transform), which
  says whether the loader or the model is the limit;
* on CPU, onnxruntime against PyTorch: the forward rate of the exported ONNX file through
  onnxruntime (CPUExecutionProvider) on the same batches, and its ratio to PyTorch's measured
  right before it.

The bound and the end-to-end rate are measured in ``--repeats`` adjacent pairs and the pair with
the median ratio is reported (all ratios are printed): on a shared machine the load drifts, and a
bound measured minutes apart from its end-to-end run says little.

Models are random-weight timm students saved as LEAF checkpoints; nothing is downloaded. The
numbers are only comparable within one run: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from leaf_steps.images import load_rgb
from leaf_steps.inference import batches, inputs
from leaf_steps.inference.export import save_onnx
from leaf_steps.inference.models import OnnxScorer, load_predictor
from leaf_steps.inference.resume import PartialResults
from leaf_steps.tools import predict
from leaf_steps.training.models import build_model, load_checkpoint, save_checkpoint
from leaf_steps.training.runtime import choose_device
from leaf_steps.training.transforms import EvalTransform, normalize
from measure_costs import photo_like

RESIZE, CROP = 256, 224


def make_folder(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"img_{k:05d}.jpg"
        buf = io.BytesIO()
        photo_like(*size, seed=k).save(buf, "JPEG", quality=92)
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


def make_checkpoint(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(name, pretrained=False)
    path = folder / f"{name}.safetensors"
    settings = {"student": {"model": name, "pretrained": False, "resize": RESIZE, "crop": CROP}}
    save_checkpoint(model, path, model_name=name, stage="distill", settings=settings, output_units="teacher_score")
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_rate(fn, batches_: list[torch.Tensor], device: torch.device, warmup: int = 1) -> float:
    """Images/s of ``fn`` over ``batches_`` (after ``warmup`` untimed batches)."""
    for b in batches_[:warmup]:
        fn(b)
    sync(device)
    start = time.perf_counter()
    n = 0
    for b in batches_[warmup:]:
        fn(b)
        n += b.shape[0]
    sync(device)
    return n / (time.perf_counter() - start)


class FullDecode(EvalTransform):
    """The eval transform with JPEGs decoded in full (what the loader cost before the reduced-scale decode)."""

    def load(self, path, max_pixels=None):
        return load_rgb(path, max_pixels)


def loader_rate(paths: list[Path], transform, batch: int, workers: int, device: torch.device) -> float:
    loader = batches.loader([str(p) for p in paths], transform, batch_size=batch, workers=workers, device=device)
    start = time.perf_counter()
    n = sum(len(b.ok) for b in loader)
    return n / (time.perf_counter() - start)


def end_to_end(
    model_path: Path, paths: list[Path], folder: Path, out: Path, batch: int, workers: int, device: torch.device
) -> tuple[float, float]:
    """(images/s of scoring the folder, seconds of start-up: collecting inputs + loading the model)."""
    start = time.perf_counter()
    items, _ = inputs.collect([str(folder)])
    predictor = load_predictor(model_path, device)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    _, errors, counts = predict.score_items(predictor, items, out, batch_size=batch, workers=workers, max_pixels=None)
    seconds = time.perf_counter() - start
    assert not any(errors), errors[:3]
    assert counts["resumed"] == 0, "an earlier run's partial results were reused"
    PartialResults(out, {}).remove()  # as leaf predict does once the table is written
    return len(paths) / seconds, startup


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", nargs="+", default=["resnet18", "convnext_base"])
    ap.add_argument("--images", type=int, default=None, help="JPEGs in the folder (default: 1024 CUDA, 128 CPU)")
    ap.add_argument("--size", default="1024x768", help="JPEG size WIDTHxHEIGHT (default %(default)s)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: leaf predict's)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: leaf predict's)")
    ap.add_argument("--repeats", type=int, default=3, help="bound / end-to-end pairs; the median pair is shown")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime comparison")
    ap.add_argument("--quick", action="store_true", help="few images, one repeat (a smoke run)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    device = choose_device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        args.repeats = 1
    n_images = args.images or (16 if args.quick else (1024 if gpu else 128))
    batch = args.batch or (predict.DEFAULT_BATCH_CUDA if gpu else predict.DEFAULT_BATCH_CPU)
    workers = batches.default_workers(device) if args.workers is None else args.workers
    w, h = (int(x) for x in args.size.lower().split("x"))
    where = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    print(
        f"device: {where}; torch {torch.__version__}, {torch.get_num_threads()} threads; {n_images} JPEGs "
        f"{w}x{h} -> shorter side {RESIZE}, crop {CROP}; batch {batch}, {workers} loader worker(s)"
    )
    results: dict = {
        "device": where,
        "torch": torch.__version__,
        "images": n_images,
        "size": [w, h],
        "batch": batch,
        "workers": workers,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        paths = make_folder(folder, n_images, (w, h))
        transform = EvalTransform(RESIZE, CROP)
        premade = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[:batch]])
        rate_loader = loader_rate(paths, transform, batch, workers, device)
        rate_full = loader_rate(paths, FullDecode(RESIZE, CROP), batch, workers, device)
        print(
            f"\nloader alone ({workers} worker(s)): {rate_loader:8.1f} images/s; with JPEGs decoded in full "
            f"{rate_full:.1f} images/s ({rate_loader / rate_full:.2f}x)"
        )
        results["loader_images_per_s"] = rate_loader
        results["loader_full_decode_images_per_s"] = rate_full
        for name in args.models:
            ckpt = make_checkpoint(name, tmp)
            predictor = load_predictor(ckpt, device)
            # the bound: pre-made batches (the same one repeated), as many images as the folder; measured
            # right before each end-to-end run, so a machine whose load drifts affects both alike
            reps = max(2, -(-n_images // batch) + 1)
            pairs = []
            for _ in range(args.repeats):
                bound = timed_rate(predictor.scorer, [premade] * reps, device)
                e2e, startup = end_to_end(ckpt, paths, folder, tmp / f"{name}.parquet", batch, workers, device)
                pairs.append((bound, e2e))
            ratios = [e / b for b, e in pairs]
            k = sorted(range(len(pairs)), key=lambda i: ratios[i])[len(pairs) // 2]  # the median pair
            bound, e2e = pairs[k]
            r = {
                "bound_images_per_s": bound,
                "end_to_end_images_per_s": e2e,
                "ratio": ratios[k],
                "ratios": ratios,
                "startup_s": startup,
            }
            print(f"\n{name}:")
            print(f"  forward bound (pre-made batches)     {bound:8.1f} images/s")
            print(
                f"  leaf predict end to end              {e2e:8.1f} images/s   ratio {ratios[k]:.2f} of the bound"
                f"{'  (goal >= 0.8)' if not gpu else ''}; median of {', '.join(f'{x:.2f}' for x in ratios)}"
            )
            print(f"  start-up (inputs + model load)       {startup:8.2f} s")
            limit = "loader" if rate_loader < bound else "model"
            print(f"  limit: the {limit} (loader alone {rate_loader:.1f} vs forward {bound:.1f} images/s)")
            if not gpu and not args.no_onnx:
                onnx_path = tmp / f"{name}.onnx"
                model, _ = load_checkpoint(ckpt)
                leaf = {"model_id": predictor.model_id, "units": predictor.units, "transform": transform.describe()}
                save_onnx(model, normalize(premade[:2]), onnx_path, leaf)
                ort = OnnxScorer(onnx_path, device, threads=torch.get_num_threads())
                torch_rate = timed_rate(predictor.scorer, [premade] * reps, device)  # side by side with ORT
                rate_ort = timed_rate(ort, [premade] * reps, device)
                r |= {"onnxruntime_images_per_s": rate_ort, "onnxruntime_over_torch": rate_ort / torch_rate}
                print(
                    f"  onnxruntime forward (CPU)            {rate_ort:8.1f} images/s   {rate_ort / torch_rate:.2f}x "
                    f"PyTorch ({torch_rate:.1f} images/s just before)"
                )
            results["models"][name] = r
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
