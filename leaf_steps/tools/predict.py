"""Score images with a trained student: ``leaf predict``.

    leaf predict --model CKPT_OR_EXPORT INPUT... --out scores.parquet|scores.csv
        [--device auto|cpu|cuda] [--batch-size N] [--workers N] [--no-amp] [--max-pixels N]

``--model``: a stage checkpoint (``results/<run>/students/.../model.safetensors``), the timm
export folder (``results/<run>/export``) or its ONNX file (``export/model.onnx``, run by
onnxruntime). INPUT: any mix of image files, folders (recursive), CSV or text lists of paths
and manifests (``leaf_steps.inference.inputs``).

Output, one row per listed image, in input order: ``path`` (as listed), ``score`` (in the
model's units; null when the image could not be scored), ``units`` ("mos" for a calibrated
model, "teacher_score" for a label-free one, as the model's metadata says), ``model_id``
and ``error`` (null, or why this image has no score: not found, not decodable, refused).
A bad image never stops the run; the log names every failure. Parquet outputs carry the
provenance (model, source, runtime, transform, counts) under the ``leaf`` metadata key.

Every image is decoded and transformed as in training (``leaf_steps.training.transforms``: the
decoder of all stages, JPEGs at the DCT scale just above the resize, the eval transform); batches are
normalised on the device, run channels_last, in bf16 autocast on CUDA (``--no-amp`` for
float32). Loader workers decode in parallel (pinned memory on CUDA); a progress bar shows on
a terminal. Scores are kept in ``<out>.partial/`` as they come (atomic part files), so a run
that is killed resumes where it stopped, skipping every finished image.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import atomic_write_text, make_provenance, write_parquet
from leaf_steps.core.progress import progress
from leaf_steps.images import DEFAULT_MAX_PIXELS
from leaf_steps.inference import batches, inputs
from leaf_steps.inference.models import Predictor, load_predictor
from leaf_steps.inference.resume import PartialResults
from leaf_steps.training.runtime import choose_device

log = logging.getLogger("leaf.predict")

OUTPUT_SCHEMA = {"path": pl.String, "score": pl.Float64, "units": pl.String, "model_id": pl.String, "error": pl.String}
OUTPUT_SUFFIXES = (".parquet", ".csv")
# Images per batch. On CPU larger batches are no faster per image, and a small one fills the
# loader pipeline sooner; on a GPU a large one keeps it busy.
DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA = 16, 128


class Terminated(Exception):
    """SIGTERM (a scheduler ending the job): stop after saving what is done."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


def score_items(
    predictor: Predictor,
    items: Sequence[inputs.InputImage],
    out: Path,
    *,
    batch_size: int,
    workers: int,
    max_pixels: int | None,
    flush_every: int = 2048,
    flush_seconds: float = 60.0,
) -> tuple[list[float | None], list[str | None], dict[str, int]]:
    """Scores and errors aligned with ``items``; finished scores are kept in ``<out>.partial/``."""
    job = {
        "model_id": predictor.model_id,
        "runtime": predictor.runtime,
        "transform": predictor.transform.describe(),
        "max_pixels": max_pixels,
    }
    store = PartialResults(out, job)
    done = store.load()
    scores: list[float | None] = [None] * len(items)
    errors: list[str | None] = [None] * len(items)
    todo: list[tuple[int, tuple[str, int, int]]] = []
    for k, item in enumerate(items):
        if item.error:
            errors[k] = item.error
            continue
        try:
            stat = os.stat(item.absolute)
        except OSError as exc:
            errors[k] = f"{item.path}: {exc.strerror or exc}"
            continue
        key = (item.absolute, stat.st_size, stat.st_mtime_ns)
        if key in done:
            scores[k] = done[key]
        else:
            todo.append((k, key))
    counts = {"resumed": len(items) - len(todo) - sum(e is not None for e in errors), "to_score": len(todo)}
    if not todo:
        return scores, errors, counts
    store.start()
    loader = batches.loader(
        [items[k].path for k, _ in todo],
        predictor.transform,
        batch_size=batch_size,
        workers=workers,
        device=predictor.device,
        max_pixels=max_pixels,
    )
    last_flush = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    finished = False
    try:
        for batch in progress(loader, total=len(loader), desc="predict (batches)"):
            values = predictor.scorer(batch.images) if batch.ok else []
            for j, value in zip(batch.ok, values):
                k, key = todo[j]
                if math.isfinite(value):
                    scores[k] = float(value)
                    store.add(key, float(value))
                else:
                    errors[k] = f"{items[k].path}: the model's output is {value} (not a finite score)"
            for j, message in batch.failed:
                errors[todo[j][0]] = message
            if len(store.pending) >= flush_every or time.monotonic() - last_flush >= flush_seconds:
                store.flush()
                last_flush = time.monotonic()
        finished = True
    finally:
        store.flush()
        signal.signal(signal.SIGTERM, previous)
        if not finished:
            log.error(
                "predict: stopped; the scores finished so far are kept in %s: rerun the same command to resume",
                store.dir,
            )
    return scores, errors, counts


def onnx_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def write_output(df: pl.DataFrame, out: Path, provenance: dict[str, Any]) -> None:
    if out.suffix == ".parquet":
        write_parquet(df, out, provenance)
    else:
        atomic_write_text(out, df.write_csv())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="leaf predict",
        description=__doc__.splitlines()[0],
        epilog="Output columns: path, score, units, model_id, error (see the module docstring).",
    )
    p.add_argument("--model", required=True, help="checkpoint (.safetensors), export folder, or .onnx file")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, CSV/text lists, manifests")
    p.add_argument("--out", required=True, help="output table (.parquet or .csv)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 128 on CUDA, 16 on CPU)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: up to 8 on CUDA, one per two cores on CPU; 0 = in process)",
    )
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of bf16 autocast")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels (decompression bombs; default %(default)s)",
    )
    p.add_argument(
        "--flush-every",
        type=int,
        default=2048,
        help="save finished scores to <out>.partial/ every N images (and every minute; default %(default)s)",
    )
    return p.parse_args(argv)


def predict(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--out {out}: expected a .parquet or .csv file name")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.flush_every < 1:
        raise ConfigError(f"--flush-every: expected a positive integer, got {args.flush_every}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers: expected 0 or more, got {args.workers}")
    device = choose_device(args.device)
    if args.device == "auto" and device.type == "cuda" and str(args.model).endswith(".onnx") and not onnx_has_cuda():
        log.info("predict: this onnxruntime has no CUDA provider; running the ONNX model on the CPU")
        device = torch.device("cpu")
    items, listed = inputs.collect(args.inputs)
    if not items:
        raise InputError(f"no images found in {args.inputs}")
    predictor = load_predictor(args.model, device, amp=not args.no_amp)
    batch_size = args.batch_size or (DEFAULT_BATCH_CUDA if device.type == "cuda" else DEFAULT_BATCH_CPU)
    workers = batches.default_workers(device) if args.workers is None else args.workers
    log.info(
        "predict: %d image(s) with %s (%s, %s, units %s) on %s; batch %d, %d worker(s)",
        len(items),
        predictor.model_id,
        predictor.source,
        predictor.runtime,
        predictor.units,
        device,
        batch_size,
        workers,
    )

    start = time.monotonic()
    scores, errors, counts = score_items(
        predictor,
        items,
        out,
        batch_size=batch_size,
        workers=workers,
        max_pixels=args.max_pixels,
        flush_every=args.flush_every,
    )
    seconds = time.monotonic() - start
    df = pl.DataFrame(
        {
            "path": [i.path for i in items],
            "score": scores,
            "units": [predictor.units] * len(items),
            "model_id": [predictor.model_id] * len(items),
            "error": errors,
        },
        schema=OUTPUT_SCHEMA,
    )
    failed = [e for e in errors if e is not None]
    counts = {**listed, **counts, "scored": len(items) - len(failed), "errors": len(failed)}
    provenance = make_provenance(
        "predict",
        model_id=predictor.model_id,
        model_source=predictor.source,
        runtime=predictor.runtime,
        units=predictor.units,
        transform=predictor.transform.describe(),
        device=str(device),
        amp=not args.no_amp and device.type == "cuda",
        inputs=list(args.inputs),
        counts=counts,
        **predictor.info,
    )
    write_output(df, out, provenance)
    PartialResults(out, {}).remove()
    for message in failed[:20]:
        log.warning("not scored: %s", message)
    if len(failed) > 20:
        log.warning("... and %d more image(s) not scored (see the error column of %s)", len(failed) - 20, out)
    log.info(
        "predict: wrote %s: %d scored, %d error row(s) (%d resumed from an earlier run) in %.1f s",
        out,
        counts["scored"],
        counts["errors"],
        counts["resumed"],
        seconds,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """:func:`predict`, ending with exit status 130 / 143 (and no traceback) on Ctrl-C / SIGTERM."""
    try:
        predict(argv)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Terminated:
        raise SystemExit(143) from None


if __name__ == "__main__":
    run_step(main)
