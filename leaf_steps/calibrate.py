"""Stage 2: calibration fine-tuning on the small MOS subset (paper Sec. 3.3, Eq 10-12).

    python -m leaf_steps.calibrate --manifest M --subset S \\
        [--init stage1.safetensors | --stage1-selection S1 --stage1-checkpoints C1 C2 ...] \\
        --out-model model.safetensors --out-losses losses.parquet \\
        --out-predictions preds.parquet --settings JSON

The stage-1 start is either ``--init`` (one checkpoint: the teacher rule's epoch, ``distill``'s
``model.safetensors``) or ``--stage1-selection`` with ``--stage1-checkpoints`` (few-shot selection,
``distill.selection: mos_subset``): the epoch ``select_stage1`` chose on this subset's calib_val
images, loaded from the candidate checkpoint whose metadata names that epoch; the selection must
have been made on this subset's calib_val images (checked by hash). Either way the stage-1 epoch
and the rule that chose it go into the provenance and the ``stage1_epoch`` / ``stage1_selection``
columns of the losses table.

Without a stage-1 start this is the CFT-only baseline (Table 3, row 1): a fresh timm student
(``student.pretrained`` decides ImageNet weights) trained on the MOS subset alone.

``--subset``: image_id, role ("calib_train" | "calib_val"), mos. The student trains on
the calib_train rows with L_cal = L_MSE + lambda_cal * L_PLCC (Eq 12, PLCC over each
mini-batch); calib_val rows are only used to pick the epoch. Subset images must not be
in the test split.

Settings JSON: ``{"student": <config student block>, "calibration": <config calibration
block>, "student_model", "device", "seed"}``. From the calibration block this step uses
epochs, batch_size, lr, weight_decay and lambda_cal (ratios/seeds/val_fraction belong to
the step that draws the subset).

Scale handling. MOS are standardised with the calib_train mean and (population) std
inside training, so the MSE term has the same scale for any MOS range (1..5, 0..100);
``train_mse`` in the losses table is in these standardised units. With a stage-1 start,
the output layer is first set affinely -- weight <- a*weight, bias <- a*bias + c,
with (a, c) the least-squares fit of standardised MOS on the stage-1 outputs over the
calib_train images -- so calibration starts from the distilled ranking already on the
right scale. At the end the inverse standardisation is folded into the output layer
the same way, so the saved checkpoint (and ``predict`` on it) outputs MOS units.

Epoch selection (few-shot protocol, paper Sec. 3.2.3). After every epoch the student
predicts calib_val; the epoch with the highest val SRCC + val PLCC is kept (earliest on
ties; an epoch whose correlations are undefined, e.g. constant predictions, is never
preferred). With a stage-1 start the affinely initialised model is evaluated as epoch 0 and
can be selected, so fine-tuning never ends worse on calib_val than the linear
calibration of stage 1. With no calib_val rows the last epoch is kept.

Outputs: the selected weights (safetensors, MOS units), per-epoch losses (epoch,
train_loss, train_mse, train_plcc_loss, val_srcc, val_plcc, val_rmse, lr, seconds,
selected, stage1_epoch, stage1_selection; the last two null for CFT-only) and
test-split predictions (image_id, prediction in the dataset's MOS units).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, stable_hash, write_parquet
from leaf_steps.core.progress import progress
from leaf_steps.evaluation.correlation import finite_or_none, plcc, srcc
from leaf_steps.training import losses
from leaf_steps.training.data import (
    ImageDataset,
    check_images_exist,
    image_rows,
    make_loader,
    read_manifest,
    shared_cache,
)
from leaf_steps.training.models import (
    build_model,
    copy_state,
    fold_affine_into_head,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from leaf_steps.training.optim import batch_indices, current_lr, make_optimizer, make_scheduler, seed_everything
from leaf_steps.training.runtime import autocast, choose_device, use_amp
from leaf_steps.training.scoring import predict
from leaf_steps.training.selection import calib_val_hash, correlation_score, find_epoch_checkpoint
from leaf_steps.training.settings import (
    settings_block,
    settings_model_name,
    settings_seed,
    student_block,
    student_train_transform,
)

log = logging.getLogger("leaf.calibrate")

ROLES = ("calib_train", "calib_val")
LOSS_SCHEMA = {
    "epoch": pl.Int32,
    "train_loss": pl.Float64,
    "train_mse": pl.Float64,
    "train_plcc_loss": pl.Float64,
    "val_srcc": pl.Float64,
    "val_plcc": pl.Float64,
    "val_rmse": pl.Float64,
    "lr": pl.Float64,
    "seconds": pl.Float64,
    "selected": pl.Boolean,
    "stage1_epoch": pl.Int32,
    "stage1_selection": pl.String,
}
PREDICTION_SCHEMA = {"image_id": pl.String, "prediction": pl.Float64}


@dataclass
class CalibrationSettings:
    raw: dict[str, Any]
    student: dict[str, Any]
    calibration: dict[str, Any]
    model_name: str
    device: str
    seed: int

    @classmethod
    def parse(cls, settings: Any) -> CalibrationSettings:
        student = student_block(settings)
        calibration = settings_block(settings, "calibration")
        return cls(
            raw=settings,
            student=student,
            calibration=calibration,
            model_name=settings_model_name(settings, student),
            device=settings.get("device") or "auto",
            seed=settings_seed(settings, 0),
        )


def load_subset(path: str, manifest: pl.DataFrame) -> pl.DataFrame:
    """The MOS subset (image_id, role, mos) with every row checked."""
    df = read_parquet(path, required=["image_id", "role", "mos"]).with_row_index("row")
    df = df.with_columns(pl.col("mos").cast(pl.Float64))
    checks = [
        (pl.col("image_id").is_null(), "image_id is null"),
        (pl.col("role").is_null() | ~pl.col("role").is_in(list(ROLES)), f"role must be one of {list(ROLES)}"),
        (pl.col("mos").is_null() | ~pl.col("mos").is_finite(), "mos must be a finite number"),
        (pl.col("image_id").is_duplicated(), "image_id appears more than once"),
        (~pl.col("image_id").is_in(manifest["image_id"].implode()), "image_id is not in the manifest"),
    ]
    for expr, message in checks:
        bad = df.filter(expr)
        if bad.height:
            r = bad.row(0, named=True)
            raise InputError(
                f"{path}: row {r['row']} (image_id {r['image_id']!r}, role {r['role']!r}, mos {r['mos']}): {message}"
            )
    test_ids = manifest.filter(pl.col("split") == "test")["image_id"].implode()
    leak = df.filter(pl.col("image_id").is_in(test_ids))
    if leak.height:
        raise InputError(
            f"{path}: row {leak['row'][0]}: image_id {leak['image_id'][0]!r} is in the test split; "
            "the MOS subset must come from training images"
        )
    return df


selection_score = correlation_score  # the same criterion picks stage-1 epochs per subset


@dataclass(frozen=True)
class Stage1Start:
    """The stage-1 checkpoint a calibration starts from, and how its epoch was chosen."""

    path: str
    epoch: int | None
    rule: str  # "teacher" or "mos_subset"
    reason: str | None = None  # why a mos_subset selection fell back to the teacher rule
    selection: str | None = None


def _epoch_of(meta: dict[str, str], path: str) -> int | None:
    value = meta.get("epoch") or meta.get("selected_epoch")
    try:
        return int(value) if value is not None else None
    except ValueError as exc:
        raise InputError(f"{path}: checkpoint metadata epoch {value!r} is not an integer") from exc


def stage1_start(
    init: str | None, selection: str | None, checkpoints: Sequence[str] | None, subset: pl.DataFrame
) -> Stage1Start | None:
    """Resolve ``--init`` or ``--stage1-selection`` + ``--stage1-checkpoints`` (None: CFT-only)."""
    if init and (selection or checkpoints):
        raise ConfigError("give either --init or --stage1-selection with --stage1-checkpoints, not both")
    if bool(selection) != bool(checkpoints):
        raise ConfigError("--stage1-selection and --stage1-checkpoints go together")
    if init:
        return Stage1Start(init, _epoch_of(read_checkpoint_metadata(init), init), "teacher")
    if not selection:
        return None
    table = read_parquet(selection, ["epoch", "selected"])
    prov = read_provenance(selection)
    chosen = table.filter(pl.col("selected"))
    if chosen.height != 1 or prov.get("selected_epoch") != chosen["epoch"][0]:
        raise InputError(
            f"{selection}: expected one selected epoch matching its provenance, found "
            f"{chosen['epoch'].to_list()} (provenance: {prov.get('selected_epoch')})"
        )
    if prov.get("calib_val_hash") != calib_val_hash(subset):
        raise InputError(
            f"{selection}: made on other calib_val images than this MOS subset's "
            f"(subset recorded there: {prov.get('subset')})"
        )
    epoch = int(chosen["epoch"][0])
    found = [(str(c), _epoch_of(read_checkpoint_metadata(c), str(c))) for c in checkpoints]
    return Stage1Start(
        find_epoch_checkpoint(found, epoch), epoch, prov.get("rule", "mos_subset"), prov.get("reason"), selection
    )


def evaluate(
    model, rows, mos: np.ndarray, mean: float, std: float, cfg: CalibrationSettings, device, cache, desc: str
) -> dict[str, float | None]:
    if not rows:
        return {"val_srcc": None, "val_plcc": None, "val_rmse": None}
    scfg = cfg.student
    pred = (
        predict(
            model,
            rows,
            resize=scfg["resize"],
            crop=scfg["crop"],
            device=device,
            batch_size=cfg.calibration["batch_size"],
            amp=scfg["amp"],
            num_workers=scfg["num_workers"],
            cache=cache,
            desc=desc,
        )
        * std
        + mean
    )
    return {
        "val_srcc": finite_or_none(srcc(pred, mos)),
        "val_plcc": finite_or_none(plcc(pred, mos)),
        "val_rmse": float(np.sqrt(np.mean((pred - mos) ** 2))),
    }


def affine_init(model, rows, z: np.ndarray, cfg: CalibrationSettings, device, cache) -> dict[str, float] | None:
    """Least-squares fit z ~ a * s + c of standardised MOS on the stage-1 outputs, folded into the head."""
    scfg = cfg.student
    s = predict(
        model,
        rows,
        resize=scfg["resize"],
        crop=scfg["crop"],
        device=device,
        batch_size=cfg.calibration["batch_size"],
        amp=scfg["amp"],
        num_workers=scfg["num_workers"],
        cache=cache,
        desc="calibrate init",
    )
    if np.ptp(s) == 0:
        log.warning(
            "calibrate: the stage-1 model gives the same score to every calib_train image; "
            "skipping the affine initialisation of the output layer"
        )
        return None
    a, c = np.polyfit(s, z, 1)
    fold_affine_into_head(model, float(a), float(c))
    log.info("calibrate: output layer initialised as %.4f * stage1 + %.4f (standardised MOS)", a, c)
    return {"scale": float(a), "shift": float(c), "stage1_srcc_train": finite_or_none(srcc(s, z))}


def train(
    cfg: CalibrationSettings,
    manifest_path: str,
    manifest: pl.DataFrame,
    subset: pl.DataFrame,
    stage1: Stage1Start | None,
    device: torch.device,
) -> tuple[torch.nn.Module, pl.DataFrame, dict[str, Any]]:
    scfg, ccfg = cfg.student, cfg.calibration
    tr = subset.filter(pl.col("role") == "calib_train").sort("image_id")
    va = subset.filter(pl.col("role") == "calib_val").sort("image_id")
    if tr.height < 2:
        raise InputError(f"the subset has {tr.height} calib_train row(s); calibration needs at least 2")
    y_train = tr["mos"].to_numpy()
    mean, std = float(y_train.mean()), float(y_train.std())
    if std == 0:
        raise InputError(f"all {tr.height} calib_train MOS equal {mean}; nothing to calibrate against")
    z_train = torch.from_numpy((y_train - mean) / std).float()
    y_val = va["mos"].to_numpy()
    train_rows = image_rows(manifest, manifest_path, tr["image_id"])
    val_rows = image_rows(manifest, manifest_path, va["image_id"])
    check_images_exist(train_rows + val_rows)
    init = stage1.path if stage1 else None
    info: dict[str, Any] = {
        "calib_train": tr.height,
        "calib_val": va.height,
        "mos_mean": mean,
        "mos_std": std,
        "init": init,
    }

    seed_everything(cfg.seed)
    cache = shared_cache(scfg["num_workers"])
    if init:
        model, meta = load_checkpoint(init, device)
        if meta["model"] != cfg.model_name:
            raise ConfigError(
                f"settings.student_model: {cfg.model_name!r} but the stage-1 checkpoint {init} holds a "
                f"{meta['model']!r} student"
            )
        info["affine_init"] = affine_init(model, train_rows, z_train.numpy(), cfg, device, cache)
    else:
        model = build_model(cfg.model_name, scfg["pretrained"]).to(device)
    optimizer = make_optimizer(model, ccfg["lr"], ccfg["weight_decay"])
    scheduler = make_scheduler(optimizer, ccfg["epochs"])
    train_ds = ImageDataset(train_rows, student_train_transform(scfg), scfg["resize"], cache)
    amp = use_amp(device, scfg["amp"])

    records: list[dict[str, Any]] = []
    best_score, best_state, best_epoch = -math.inf, None, None
    if init:
        start = time.monotonic()
        val = evaluate(model, val_rows, y_val, mean, std, cfg, device, cache, "calibrate val 0")
        records.append({"epoch": 0, **val, "lr": None, "seconds": time.monotonic() - start})
        if selection_score(val["val_srcc"], val["val_plcc"]) > best_score:
            best_score, best_state, best_epoch = selection_score(val["val_srcc"], val["val_plcc"]), copy_state(model), 0

    for epoch in range(1, ccfg["epochs"] + 1):
        start = time.monotonic()
        lr = current_lr(optimizer)
        order = np.random.default_rng([cfg.seed, 4, epoch]).permutation(tr.height).tolist()
        batches = batch_indices(order, ccfg["batch_size"])
        loader = make_loader(train_ds, batches, scfg["num_workers"], cfg.seed * 1000 + epoch, device)
        model.train()
        sums = np.zeros(3)
        for k, (images, idx) in enumerate(progress(loader, total=len(batches), desc=f"calibrate epoch {epoch}")):
            with autocast(device, amp):
                out = model(images.to(device, non_blocking=True)).reshape(-1)
            terms = losses.calibration_loss(out.float(), z_train[idx].to(device), ccfg["lambda_cal"])
            if not torch.isfinite(terms.total):
                raise ConfigError(
                    f"calibration.lr: training diverged at epoch {epoch}, step {k + 1} "
                    f"(loss {terms.total.item()}); lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            sums += [terms.total.item(), terms.mse.item(), terms.plcc.item()]
        scheduler.step()
        sums /= len(batches)
        val = evaluate(model, val_rows, y_val, mean, std, cfg, device, cache, f"calibrate val {epoch}")
        records.append(
            {
                "epoch": epoch,
                "train_loss": sums[0],
                "train_mse": sums[1],
                "train_plcc_loss": sums[2],
                **val,
                "lr": lr,
                "seconds": time.monotonic() - start,
            }
        )
        log.info(
            "calibrate epoch %d/%d: train %.4f val srcc %s plcc %s",
            epoch,
            ccfg["epochs"],
            sums[0],
            val["val_srcc"],
            val["val_plcc"],
        )
        score = selection_score(val["val_srcc"], val["val_plcc"])
        if score > best_score:
            best_score, best_state, best_epoch = score, copy_state(model), epoch
    if best_state is None:
        log.warning("calibrate: no calib_val rows with defined SRCC/PLCC; keeping the last epoch")
        best_epoch = ccfg["epochs"]
    else:
        model.load_state_dict(best_state)
    # Standardised -> MOS units, inside the output layer, so the checkpoint predicts MOS directly.
    fold_affine_into_head(model, std, mean)
    for r in records:
        r["selected"] = r["epoch"] == best_epoch
        r["stage1_epoch"] = stage1.epoch if stage1 else None
        r["stage1_selection"] = stage1.rule if stage1 else None
    info["selected_epoch"] = best_epoch
    return model, pl.DataFrame(records, schema=LOSS_SCHEMA), info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leaf_steps.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="dataset manifest Parquet")
    p.add_argument("--subset", required=True, help="MOS subset Parquet (image_id, role, mos)")
    p.add_argument("--init", default=None, help="stage-1 checkpoint (teacher rule); absent = CFT-only baseline")
    p.add_argument("--stage1-selection", default=None, help="select_stage1's choice for this subset")
    p.add_argument("--stage1-checkpoints", nargs="+", default=None, help="candidate stage-1 checkpoints")
    p.add_argument("--out-model", required=True, help="selected checkpoint (.safetensors, MOS units)")
    p.add_argument("--out-losses", required=True, help="per-epoch losses Parquet")
    p.add_argument("--out-predictions", required=True, help="test-split predictions Parquet")
    p.add_argument("--settings", required=True, type=json_arg, help="settings JSON (see module docstring)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = CalibrationSettings.parse(args.settings)
    device = choose_device(cfg.device)
    manifest = read_manifest(args.manifest)
    subset = load_subset(args.subset, manifest)
    # Resolved (and every checkpoint's metadata read) before touching any image.
    start = stage1_start(args.init, args.stage1_selection, args.stage1_checkpoints, subset)
    if start:
        log.info(
            "calibrate: starting from stage-1 epoch %s (%s rule%s): %s",
            start.epoch,
            start.rule,
            f"; fallback: {start.reason}" if start.reason else "",
            start.path,
        )
    test_rows = image_rows(manifest, args.manifest, manifest.filter(pl.col("split") == "test")["image_id"])
    check_images_exist(test_rows)

    model, loss_df, info = train(cfg, args.manifest, manifest, subset, start, device)
    preds = predict(
        model,
        test_rows,
        resize=cfg.student["resize"],
        crop=cfg.student["crop"],
        device=device,
        batch_size=cfg.calibration["batch_size"],
        amp=cfg.student["amp"],
        num_workers=cfg.student["num_workers"],
        desc="calibrate predict test",
    )

    provenance = make_provenance(
        "calibrate",
        settings=cfg.raw,
        settings_hash=stable_hash(cfg.raw),
        model=cfg.model_name,
        device=str(device),
        inputs={
            "manifest": args.manifest,
            "subset": args.subset,
            "init": start.path if start else None,
            "stage1_selection": start.selection if start else None,
        },
        counts={**info, "test_images": len(test_rows)},
        selected_epoch=info["selected_epoch"],
        stage1_epoch=start.epoch if start else None,
        stage1_selection=start.rule if start else None,
        stage1_selection_reason=start.reason if start else None,
    )
    save_checkpoint(
        model,
        args.out_model,
        model_name=cfg.model_name,
        stage="calibrate",
        settings=cfg.raw,
        output_units="mos",
        extra={"selected_epoch": str(info["selected_epoch"]), "provenance": provenance},
    )
    write_parquet(loss_df, args.out_losses, provenance)
    pred_df = pl.DataFrame({"image_id": [r.image_id for r in test_rows], "prediction": preds}, schema=PREDICTION_SCHEMA)
    write_parquet(pred_df, args.out_predictions, provenance)
    log.info(
        "calibrate: selected epoch %s; wrote %s, %s, %s",
        info["selected_epoch"],
        args.out_model,
        args.out_losses,
        args.out_predictions,
    )


if __name__ == "__main__":
    run_step(main)
