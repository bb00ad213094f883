"""Export a run's headline student: a timm-native folder, ONNX, and a model card.

    python -m leaf_steps.export_model --checkpoint model.safetensors --manifest M \\
        [--runs summary/runs.parquet] [--subset S] --out-dir results/<run>/export --settings JSON

Writes ``<out-dir>/config.json`` + ``model.safetensors`` (timm's own ``save_for_hf``; load with
``timm.create_model("local-dir:<out-dir>", pretrained=True)``), ``model.onnx`` (dynamic batch;
onnxruntime) unless ``onnx`` is false, and ``README.md`` (the model card: architecture,
teacher, data, MOS budget, calibration, test SRCC/PLCC per seed, input transform, output
units, usage). See :mod:`leaf_steps.inference.export` for the formats.

``--runs``: the run's evaluation table (:mod:`leaf_steps.evaluate`, one row per method, ratio and
seed); the card lists this variant's rows at this ratio, every seed, and marks the exported seed.
``--subset``: the MOS subset the checkpoint was
calibrated on (counts for the card; absent label-free).

Settings JSON: ``{"run_name", "variant", "ratio", "seed", "onnx", "teacher": {"name",
"backend", "model"}, "dataset", "student", "distill", "calibration", "tau"}``.

Before anything is published the step reloads both exports and scores the first
:data:`CHECK_IMAGES` test images of the manifest through each (timm model + timm transform;
onnxruntime), next to the checkpoint in PyTorch with LEAF's transform; a difference beyond
``leaf_steps.inference.export.TOLERANCE`` fails the step. The folder is written beside the
target and renamed into place at the end, so a failed export leaves no half folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch

from leaf_steps import __version__
from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import atomic_write_text, library_versions, read_parquet, write_json
from leaf_steps.inference import card
from leaf_steps.inference.export import (
    ONNX_FILE,
    check_exports,
    save_onnx,
    save_timm_folder,
)
from leaf_steps.inference.models import checkpoint_facts
from leaf_steps.training.data import check_images_exist, image_rows, read_manifest
from leaf_steps.training.models import load_checkpoint
from leaf_steps.training.transforms import normalize

log = logging.getLogger("leaf.export")

CHECK_IMAGES = 8
SETTINGS_KEYS = (
    "run_name",
    "variant",
    "ratio",
    "seed",
    "teacher",
    "dataset",
    "student",
    "distill",
    "calibration",
    "tau",
)


def read_metrics(runs: str | None, variant: str, ratio: float) -> list[dict[str, Any]]:
    """This variant's test metrics at this MOS ratio, one row per seed (label-free: one row, seed None)."""
    if not runs:
        return []
    df = read_parquet(runs, required=["method", "ratio", "seed", "n", "srcc", "plcc"])
    rows = df.filter((pl.col("method") == variant) & ((pl.col("ratio") - float(ratio)).abs() < 1e-9)).to_dicts()
    if not rows:
        raise InputError(
            f"{runs}: no evaluation row for method {variant!r} at ratio {ratio}: the card would have no test metrics"
        )
    return sorted(rows, key=lambda r: (r["seed"] is not None, r["seed"] or 0))


def subset_counts(path: str | None) -> dict[str, int]:
    if not path:
        return {"calib_train": 0, "calib_val": 0}
    roles = read_parquet(path, required=["role"])["role"].to_list()
    return {"calib_train": roles.count("calib_train"), "calib_val": roles.count("calib_val")}


def describe_stages(settings: dict[str, Any]) -> tuple[str, str]:
    d, c = settings["distill"], settings["calibration"]
    distill = (
        f"point (Eq 6) + lambda_dis {d['lambda_dis']} x confidence-weighted pair loss (Eq 8), pairs with "
        f"confidence >= tau {settings['tau']}; {d['epochs']} epochs, AdamW lr {d['lr']:g}, batch "
        f"{d['batch_size']} images + {d['pair_batch_size']} pairs; epoch picked on a held-out "
        f"{d['holdout_fraction']:g} of the training images (no MOS)"
    )
    if settings["ratio"] == 0:
        return distill, "none (label-free)"
    calib = (
        f"MSE + lambda_cal {c['lambda_cal']} x (1 - batch PLCC) on standardised MOS, from the stage-1 model "
        f"with its output layer fitted by least squares; {c['epochs']} epochs, AdamW lr {c['lr']:g}, batch "
        f"{c['batch_size']}; epoch picked by SRCC + PLCC on the held-out part of the subset"
    )
    return distill, calib


def export(
    checkpoint: str, manifest_path: str, runs: str | None, subset: str | None, out_dir: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    if missing:
        raise ConfigError(f"--settings: missing key(s) {missing}")
    facts = checkpoint_facts(checkpoint)
    model, meta = load_checkpoint(checkpoint, "cpu")
    model.eval()
    transform = facts["transform"]
    manifest = read_manifest(manifest_path)
    test_ids = sorted(manifest.filter(pl.col("split") == "test")["image_id"].to_list())
    if not test_ids:
        raise InputError(f"{manifest_path}: no test images to check the exports on")
    check_rows = image_rows(manifest, manifest_path, test_ids[:CHECK_IMAGES])
    check_images_exist(check_rows)
    check_paths = [r.path for r in check_rows]

    leaf = {
        "model_id": facts["model_id"],
        "architecture": facts["architecture"],
        "stage": facts["stage"],
        "units": facts["units"],
        "transform": transform.describe(),
        "run_name": settings["run_name"],
        "variant": settings["variant"],
        "mos_ratio": settings["ratio"],
        "seed": settings["seed"],
        "source_checkpoint": str(checkpoint),
        "leaf_version": __version__,
    }
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_timm_folder(model, transform, tmp, leaf)
    example = normalize(torch.stack([transform(transform.load(r.path)) for r in check_rows[:2]]))
    if settings.get("onnx", True):
        save_onnx(model, example, tmp / ONNX_FILE, leaf)
        check = check_exports(model, transform, tmp, check_paths)
        if not check["ok"]:
            raise InputError(f"{checkpoint}: exports disagree with the checkpoint beyond tolerance: {check}")
    else:
        check = None
    distill_text, calibration_text = describe_stages(settings)
    counts = subset_counts(subset)
    card_facts = {
        **leaf,
        **counts,
        "folder": str(out_dir),
        "checkpoint": str(checkpoint),
        "ratio": settings["ratio"],
        "teacher": settings["teacher"],
        "dataset": settings["dataset"],
        "pretrained": settings["student"]["pretrained"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "selected_epoch": meta.get("selected_epoch"),
        "train_images": manifest.filter(pl.col("split") == "train").height,
        "test_images": len(test_ids),
        "distill_text": distill_text,
        "calibration_text": calibration_text,
        "metrics": read_metrics(runs, settings["variant"], settings["ratio"]),
        "check": check
        or {
            "images": 0,
            "timm_max_abs_diff": float("nan"),
            "onnx_max_abs_diff": float("nan"),
            "tolerance_relative_to_std": float("nan"),
            "score_std": float("nan"),
        },
        "leaf_version": __version__,
        "versions": library_versions(),
    }
    atomic_write_text(tmp / "README.md", card.render(card_facts))
    write_json(tmp / "export_check.json", {"check": check, "leaf": leaf})
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp.iterdir():  # atomic writes create owner-only files; an export is meant to be shared
        f.chmod(0o666 & ~umask)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return {"leaf": leaf, "check": check}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leaf_steps.export_model", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the stage checkpoint to export (.safetensors)")
    p.add_argument("--manifest", required=True, help="dataset manifest (test images for the export check)")
    p.add_argument("--runs", default=None, help="the run's evaluation table (summary/runs.parquet)")
    p.add_argument("--subset", default=None, help="the MOS subset of the checkpoint (absent label-free)")
    p.add_argument("--out-dir", required=True, help="export folder (replaced)")
    p.add_argument("--settings", required=True, type=json_arg, help="settings JSON (see module docstring)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = export(args.checkpoint, args.manifest, args.runs, args.subset, Path(args.out_dir), args.settings)
    log.info("export: %s -> %s (check: %s)", args.checkpoint, args.out_dir, result["check"])


if __name__ == "__main__":
    run_step(main)
