"""Stage 1: distil the teacher into the student (paper Sec. 3.2.3, Eq 6-9). No MOS is used.

    python -m leaf_steps.distill --manifest M --points P --pairs F \\
        --out-model model.safetensors --out-losses losses.parquet \\
        --out-predictions preds.parquet --settings JSON \\
        [--out-epoch-checkpoints epochs/epoch1.safetensors ... --out-epoch-predictions epoch_predictions.parquet]

Inputs. ``--points``: image_id, teacher_score (Eq 2, 1..5) and optionally ``error``;
rows with a non-null error are skipped (and counted in the log and the provenance).
``--pairs``: a_id, b_id, t_ab (Eq 4), confidence (Eq 5), already filtered by tau; it may
be left out when ``use_pair`` is false. Both accept files or folders of shards.
Only ``split == "train"`` images are used:
point rows of other splits are dropped, and so are pairs touching another split.

Settings JSON: ``{"student": <config student block>, "distill": <config distill block>,
"use_point", "use_pair", "use_confidence", "student_model", "device", "seed"}``;
``student_model`` overrides ``student.model``; ``seed`` overrides ``distill.seed``.

MOS-free checkpoint selection. A seeded ``holdout_fraction`` of the training images
(those with a teacher score or in a pair) is held out: their teacher scores are not
trained on, and neither are the pairs that touch them. After every epoch the student
scores those images (eval transform) and we compute, on them, ``val_reg`` (Eq 6),
``val_rank`` (Eq 8 on the held-out pairs) and ``val_loss`` (Eq 9 with the same
switches as training, summing the enabled terms that have held-out data). The epoch
with the lowest ``val_loss`` is kept (the earliest on ties). With no held-out data for
any enabled term (e.g. ``holdout_fraction: 0``) the last epoch is kept. This is the teacher
rule of :mod:`leaf_steps.training.selection`: it picks the label-free model, and the start of
every calibration when ``distill.selection`` is ``teacher``.

Few-shot selection (``distill.selection: mos_subset``, paper Sec. 3.2.3). The MOS subsets are
drawn later and per seed, so this step keeps what their selection needs, without reading any
MOS: with ``--out-epoch-checkpoints`` / ``--out-epoch-predictions``, after each candidate epoch
(every ``distill.checkpoint_every``-th and the last, ascending; one path per candidate) it saves
the weights (safetensors, metadata ``epoch``) and the student's outputs on every labelled
training image (the pool the subsets come from). ``select_stage1`` then picks one epoch per
subset on its calib_val images. Cost: one checkpoint (the student's size: ConvNeXt-Base in
float32 is 354 MB) and one evaluation pass over the labelled training images per candidate.

Schedule. One epoch is one pass over the training images of the point term, in
shuffled batches of ``batch_size``. Each step also draws the next ``pair_batch_size``
training pairs from a stream that reshuffles the pairs whenever it runs out (so pairs
are seen at their own rate, independent of the number of points). The point images and
both images of every pair go through the network as one batch. With ``use_point:
false`` an epoch still has as many steps as a point pass would have, so the ablations
train for the same number of steps. Learning rate: AdamW with cosine decay per epoch.

Outputs: the selected weights (safetensors; the model outputs teacher-score units;
metadata ``epoch`` and ``selected_epoch``), per-epoch losses (epoch, train_loss,
train_reg, train_rank, val_loss, val_reg, val_rank, val_teacher_srcc, lr, seconds,
selected) and predictions for
``split == "test"`` images (image_id, prediction in teacher-score units); with the per-epoch
outputs, the candidate checkpoints and their predictions (image_id, epoch, prediction).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import (
    make_provenance,
    parquet_files,
    read_shards,
    stable_hash,
    write_parquet,
)
from leaf_steps.core.progress import progress
from leaf_steps.evaluation.correlation import finite_or_none
from leaf_steps.evaluation.correlation import srcc as correlation_srcc
from leaf_steps.training import losses
from leaf_steps.training.data import (
    ImageDataset,
    ImageRow,
    check_images_exist,
    image_rows,
    make_loader,
    read_manifest,
    shared_cache,
)
from leaf_steps.training.epochs import (
    EPOCH_PREDICTION_SCHEMA,
    candidate_epochs,
    labelled_training_ids,
)
from leaf_steps.training.holdout import holdout_ids
from leaf_steps.training.models import build_model, copy_state, save_checkpoint
from leaf_steps.training.optim import (
    batch_indices,
    current_lr,
    make_optimizer,
    make_scheduler,
    seed_everything,
)
from leaf_steps.training.runtime import autocast, choose_device, use_amp
from leaf_steps.training.scoring import predict
from leaf_steps.training.settings import (
    settings_block,
    settings_flag,
    settings_model_name,
    settings_seed,
    student_block,
    student_train_transform,
)

log = logging.getLogger("leaf.distill")

LOSS_SCHEMA = {
    "epoch": pl.Int32,
    "train_loss": pl.Float64,
    "train_reg": pl.Float64,
    "train_rank": pl.Float64,
    "val_loss": pl.Float64,
    "val_reg": pl.Float64,
    "val_rank": pl.Float64,
    "val_teacher_srcc": pl.Float64,
    "lr": pl.Float64,
    "seconds": pl.Float64,
    "selected": pl.Boolean,
}
PREDICTION_SCHEMA = {"image_id": pl.String, "prediction": pl.Float64}
PAIR_SCHEMA = {"a_id": pl.String, "b_id": pl.String, "t_ab": pl.Float64, "confidence": pl.Float64}


@dataclass
class DistillSettings:
    raw: dict[str, Any]
    student: dict[str, Any]
    distill: dict[str, Any]
    model_name: str
    use_point: bool
    use_pair: bool
    use_confidence: bool
    device: str
    seed: int

    @classmethod
    def parse(cls, settings: Any) -> DistillSettings:
        student = student_block(settings)
        distill = settings_block(settings, "distill")
        out = cls(
            raw=settings,
            student=student,
            distill=distill,
            model_name=settings_model_name(settings, student),
            use_point=settings_flag(settings, "use_point", True),
            use_pair=settings_flag(settings, "use_pair", True),
            use_confidence=settings_flag(settings, "use_confidence", True),
            device=settings.get("device") or "auto",
            seed=settings_seed(settings, distill["seed"]),
        )
        if not (out.use_point or out.use_pair):
            raise ConfigError("settings: use_point and use_pair are both false; distillation needs at least one")
        return out


# --------------------------------------------------------------------------- inputs


def _read(paths: Sequence[str], required: Sequence[str]) -> tuple[pl.DataFrame, str]:
    files = [f for p in paths for f in parquet_files(p)]
    label = ", ".join(map(str, files))
    return read_shards(files, required).with_row_index("row"), label


def load_points(
    paths: Sequence[str], manifest: pl.DataFrame, train_ids: set[str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Train-split teacher scores (image_id, teacher_score); error rows skipped and counted."""
    df, label = _read(paths, ["image_id", "teacher_score"])
    counts = {"point_rows": df.height}
    if "error" in df.columns:
        failed = df.filter(pl.col("error").is_not_null())
        counts["point_errors_skipped"] = failed.height
        if failed.height:
            log.warning(
                "%s: skipping %d point row(s) with a teacher error (first: %s)",
                label,
                failed.height,
                failed["error"][0],
            )
        df = df.filter(pl.col("error").is_null())
    else:
        counts["point_errors_skipped"] = 0
    df = df.with_columns(pl.col("teacher_score").cast(pl.Float64))
    bad = df.filter(pl.col("teacher_score").is_null() | ~pl.col("teacher_score").is_finite())
    if bad.height:
        raise InputError(
            f"{label}: row {bad['row'][0]} (image_id {bad['image_id'][0]!r}): teacher_score is "
            f"{bad['teacher_score'][0]} but error is null"
        )
    unknown = df.filter(~pl.col("image_id").is_in(manifest["image_id"].implode()))
    if unknown.height:
        raise InputError(
            f"{label}: row {unknown['row'][0]}: image_id {unknown['image_id'][0]!r} is not in the manifest"
        )
    dup = df.filter(pl.col("image_id").is_duplicated())
    if dup.height:
        raise InputError(f"{label}: row {dup['row'][0]}: image_id {dup['image_id'][0]!r} scored more than once")
    train = df.filter(pl.col("image_id").is_in(sorted(train_ids)))
    counts["point_non_train_dropped"] = df.height - train.height
    counts["points_train"] = train.height
    return train.select("image_id", "teacher_score").sort("image_id"), counts


def load_pairs(
    paths: Sequence[str], manifest: pl.DataFrame, train_ids: set[str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Train-split pairs (a_id, b_id, t_ab, confidence)."""
    df, label = _read(paths, ["a_id", "b_id", "t_ab", "confidence"])
    counts = {"pair_rows": df.height}
    ids = manifest["image_id"].implode()
    for col in ("a_id", "b_id"):
        unknown = df.filter(pl.col(col).is_null() | ~pl.col(col).is_in(ids))
        if unknown.height:
            raise InputError(f"{label}: row {unknown['row'][0]}: {col} {unknown[col][0]!r} is not in the manifest")
    df = df.with_columns(pl.col("t_ab").cast(pl.Float64), pl.col("confidence").cast(pl.Float64))
    bad_t = df.filter(pl.col("t_ab").is_null() | ~pl.col("t_ab").is_in([0.0, 1.0]))
    if bad_t.height:
        raise InputError(f"{label}: row {bad_t['row'][0]}: t_ab must be 0 or 1, got {bad_t['t_ab'][0]}")
    bad_w = df.filter(pl.col("confidence").is_null() | ~pl.col("confidence").is_between(0.0, 1.0))
    if bad_w.height:
        raise InputError(f"{label}: row {bad_w['row'][0]}: confidence must be in [0, 1], got {bad_w['confidence'][0]}")
    same = df.filter(pl.col("a_id") == pl.col("b_id"))
    if same.height:
        raise InputError(f"{label}: row {same['row'][0]}: a pair of image {same['a_id'][0]!r} with itself")
    train_list = sorted(train_ids)
    train = df.filter(pl.col("a_id").is_in(train_list) & pl.col("b_id").is_in(train_list))
    counts["pair_non_train_dropped"] = df.height - train.height
    if counts["pair_non_train_dropped"]:
        log.warning("%s: dropped %d pair(s) touching non-train images", label, counts["pair_non_train_dropped"])
    counts["pairs_train"] = train.height
    return train.select("a_id", "b_id", "t_ab", "confidence"), counts


# --------------------------------------------------------------------------- training


@dataclass
class EpochKeeper:
    """Per candidate epoch: the checkpoint, and the outputs on the labelled training images."""

    cfg: DistillSettings
    paths: dict[int, Path]  # candidate epoch -> checkpoint path
    pool: list[ImageRow]  # labelled training images
    frames: list[pl.DataFrame] = field(default_factory=list)

    def keep(self, epoch: int, model: torch.nn.Module, device: torch.device, cache) -> None:
        if epoch not in self.paths:
            return
        cfg = self.cfg
        save_checkpoint(
            model,
            self.paths[epoch],
            model_name=cfg.model_name,
            stage="distill_epoch",
            settings=cfg.raw,
            output_units="teacher_score",
            extra={"epoch": str(epoch)},
        )
        scores = predict(
            model,
            self.pool,
            resize=cfg.student["resize"],
            crop=cfg.student["crop"],
            device=device,
            batch_size=cfg.distill["batch_size"],
            amp=cfg.student["amp"],
            num_workers=cfg.student["num_workers"],
            cache=cache,
            desc=f"distill labelled {epoch}",
        )
        self.frames.append(
            pl.DataFrame(
                {"image_id": [r.image_id for r in self.pool], "epoch": epoch, "prediction": scores},
                schema=EPOCH_PREDICTION_SCHEMA,
            )
        )

    def predictions(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=EPOCH_PREDICTION_SCHEMA)


class PairStream:
    """Endless seeded stream of training-pair indices, reshuffled at each pass."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.rng = np.random.default_rng([seed, 2])
        self._order: list[int] = []

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k and self.n:
            if not self._order:
                self._order = self.rng.permutation(self.n).tolist()
            out.append(self._order.pop())
        return out


@dataclass
class Step:
    points: list[int]  # rows of the training points table
    pairs: list[int]  # rows of the training pairs table


def val_terms(
    scores: dict[str, float], val_points: pl.DataFrame, val_pairs: pl.DataFrame, cfg: DistillSettings
) -> dict[str, float | None]:
    """Eq 6 / 8 / 9 on held-out data, and SRCC of student vs teacher on held-out images."""
    lam = cfg.distill["lambda_dis"]
    reg = rank = srcc = None
    if val_points.height:
        s = np.array([scores[i] for i in val_points["image_id"]])
        y = val_points["teacher_score"].to_numpy()
        reg = float(losses.point_loss(torch.tensor(s), torch.tensor(y)))
        srcc = finite_or_none(correlation_srcc(s, y))
    if val_pairs.height:
        sa = torch.tensor([scores[i] for i in val_pairs["a_id"]])
        sb = torch.tensor([scores[i] for i in val_pairs["b_id"]])
        w = torch.tensor(val_pairs["confidence"].to_numpy()) if cfg.use_confidence else None
        rank = float(losses.rank_loss(sa, sb, torch.tensor(val_pairs["t_ab"].to_numpy()), w))
    parts = []
    if cfg.use_point and reg is not None:
        parts.append(reg)
    if cfg.use_pair and rank is not None:
        parts.append(lam * rank)
    return {"val_loss": sum(parts) if parts else None, "val_reg": reg, "val_rank": rank, "val_teacher_srcc": srcc}


def train(
    cfg: DistillSettings,
    manifest_path: str,
    manifest: pl.DataFrame,
    points: pl.DataFrame,
    pairs: pl.DataFrame,
    device: torch.device,
    keeper: EpochKeeper | None = None,
) -> tuple[torch.nn.Module, pl.DataFrame, dict[str, Any]]:
    scfg, dcfg = cfg.student, cfg.distill
    candidates = set(points["image_id"]) | set(pairs["a_id"]) | set(pairs["b_id"])
    held = holdout_ids(sorted(candidates), dcfg["holdout_fraction"], cfg.seed)
    held_list = sorted(held)
    train_points = points.filter(~pl.col("image_id").is_in(held_list))
    val_points = points.filter(pl.col("image_id").is_in(held_list))
    touches = pl.col("a_id").is_in(held_list) | pl.col("b_id").is_in(held_list)
    train_pairs, val_pairs = pairs.filter(~touches), pairs.filter(touches)
    if cfg.use_point and train_points.height < 2:
        raise InputError(
            f"only {train_points.height} training image(s) with a teacher score after the holdout; need >= 2"
        )
    if cfg.use_pair and train_pairs.height == 0:
        raise InputError("no training pairs left (use_pair is true): check the pairs file and the tau filter")
    counts = {
        "holdout_images": len(held),
        "train_points": train_points.height,
        "val_points": val_points.height,
        "train_pairs": train_pairs.height,
        "val_pairs": val_pairs.height,
    }
    log.info("distill: %s", counts)

    # One image table for everything the loaders touch; batches index into it.
    train_ids = sorted(set(train_points["image_id"]) | set(train_pairs["a_id"]) | set(train_pairs["b_id"]))
    val_ids = sorted(set(val_points["image_id"]) | set(val_pairs["a_id"]) | set(val_pairs["b_id"]))
    all_rows = image_rows(manifest, manifest_path, sorted(set(train_ids) | set(val_ids)))
    check_images_exist(all_rows)
    index = {r.image_id: i for i, r in enumerate(all_rows)}
    val_rows = [all_rows[index[i]] for i in val_ids]

    point_img = torch.tensor([index[i] for i in train_points["image_id"]], dtype=torch.long)
    point_y = torch.tensor(train_points["teacher_score"].to_numpy(), dtype=torch.float32)
    pair_a = [index[i] for i in train_pairs["a_id"]]
    pair_b = [index[i] for i in train_pairs["b_id"]]
    pair_t = torch.tensor(train_pairs["t_ab"].to_numpy(), dtype=torch.float32)
    pair_w = torch.tensor(train_pairs["confidence"].to_numpy(), dtype=torch.float32)

    seed_everything(cfg.seed)
    model = build_model(cfg.model_name, scfg["pretrained"]).to(device)
    optimizer = make_optimizer(model, dcfg["lr"], dcfg["weight_decay"])
    scheduler = make_scheduler(optimizer, dcfg["epochs"])
    cache = shared_cache(scfg["num_workers"])
    train_ds = ImageDataset(all_rows, student_train_transform(scfg), scfg["resize"], cache)
    pair_stream = PairStream(train_pairs.height, cfg.seed)
    n_step_images = train_points.height if cfg.use_point else len(train_ids)
    amp = use_amp(device, scfg["amp"])
    if scfg["amp"] and not amp:
        log.info("student.amp ignored on %s (bf16 autocast is used on CUDA only)", device)

    records, best_state, best_loss = [], None, math.inf
    for epoch in range(1, dcfg["epochs"] + 1):
        start = time.monotonic()
        lr = current_lr(optimizer)
        order = np.random.default_rng([cfg.seed, 3, epoch]).permutation(n_step_images).tolist()
        steps = [
            Step(
                points=b if cfg.use_point else [],
                pairs=pair_stream.take(dcfg["pair_batch_size"]) if cfg.use_pair else [],
            )
            for b in batch_indices(order, dcfg["batch_size"])
        ]
        batches = [
            [int(point_img[i]) for i in s.points] + [pair_a[j] for j in s.pairs] + [pair_b[j] for j in s.pairs]
            for s in steps
        ]
        loader = make_loader(train_ds, batches, scfg["num_workers"], cfg.seed * 1000 + epoch, device)
        model.train()
        sums = {"loss": 0.0, "reg": 0.0, "rank": 0.0}
        for k, (step, (images, _)) in enumerate(
            zip(steps, progress(loader, total=len(steps), desc=f"distill epoch {epoch}"))
        ):
            with autocast(device, amp):
                out = model(images.to(device, non_blocking=True)).reshape(-1)
            out = out.float()
            n_p, n_q = len(step.points), len(step.pairs)
            terms = losses.distill_loss(
                scores=out[:n_p],
                teacher_scores=point_y[step.points].to(device),
                s_a=out[n_p : n_p + n_q],
                s_b=out[n_p + n_q :],
                t_ab=pair_t[step.pairs].to(device),
                confidence=pair_w[step.pairs].to(device),
                lambda_dis=dcfg["lambda_dis"],
                use_point=cfg.use_point,
                use_pair=cfg.use_pair,
                use_confidence=cfg.use_confidence,
            )
            if not torch.isfinite(terms.total):
                raise ConfigError(
                    f"distill.lr: training diverged at epoch {epoch}, step {k + 1} "
                    f"(loss {terms.total.item()}); lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            sums["loss"] += terms.total.item()
            sums["reg"] += terms.reg.item() if terms.reg is not None else 0.0
            sums["rank"] += terms.rank.item() if terms.rank is not None else 0.0
        scheduler.step()
        n = len(steps)
        scores = predict(
            model,
            val_rows,
            resize=scfg["resize"],
            crop=scfg["crop"],
            device=device,
            batch_size=dcfg["batch_size"],
            amp=scfg["amp"],
            num_workers=scfg["num_workers"],
            cache=cache,
            desc=f"distill val {epoch}",
        )
        val = val_terms(dict(zip(val_ids, scores.tolist())), val_points, val_pairs, cfg)
        if keeper is not None:
            keeper.keep(epoch, model, device, cache)
        record = {
            "epoch": epoch,
            "train_loss": sums["loss"] / n,
            "train_reg": sums["reg"] / n if cfg.use_point else None,
            "train_rank": sums["rank"] / n if cfg.use_pair else None,
            **val,
            "lr": lr,
            "seconds": time.monotonic() - start,
        }
        records.append(record)
        log.info(
            "distill epoch %d/%d: train %.4f val %s srcc %s (%.1f s)",
            epoch,
            dcfg["epochs"],
            record["train_loss"],
            _fmt(val["val_loss"]),
            _fmt(val["val_teacher_srcc"]),
            record["seconds"],
        )
        if val["val_loss"] is not None and val["val_loss"] < best_loss:
            best_loss, best_state, best_epoch = val["val_loss"], copy_state(model), epoch
    if best_state is None:
        log.warning("distill: no held-out data for the enabled loss terms; keeping the last epoch")
        best_epoch = dcfg["epochs"]
    else:
        model.load_state_dict(best_state)
    for r in records:
        r["selected"] = r["epoch"] == best_epoch
    counts["selected_epoch"] = best_epoch
    return model, pl.DataFrame(records, schema=LOSS_SCHEMA), counts


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leaf_steps.distill", description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="dataset manifest Parquet")
    p.add_argument("--points", required=True, nargs="+", help="teacher point scores (file(s) or folder of shards)")
    p.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="filtered teacher pairs (file(s) or folder of shards); may be left out when use_pair is false",
    )
    p.add_argument("--out-model", required=True, help="selected checkpoint (.safetensors)")
    p.add_argument("--out-losses", required=True, help="per-epoch losses Parquet")
    p.add_argument("--out-predictions", required=True, help="test-split predictions Parquet")
    p.add_argument("--settings", required=True, type=json_arg, help="settings JSON (see module docstring)")
    p.add_argument(
        "--out-epoch-checkpoints",
        nargs="+",
        default=None,
        help="one checkpoint path per candidate epoch (ascending) for few-shot selection",
    )
    p.add_argument(
        "--out-epoch-predictions",
        default=None,
        help="Parquet of every candidate epoch's outputs on the labelled training images",
    )
    return p.parse_args(argv)


def epoch_keeper(args: argparse.Namespace, cfg: DistillSettings, manifest: pl.DataFrame) -> EpochKeeper | None:
    """The per-epoch outputs asked for on the command line, checked against the candidate epochs."""
    if args.out_epoch_checkpoints is None and args.out_epoch_predictions is None:
        return None
    if args.out_epoch_checkpoints is None or args.out_epoch_predictions is None:
        raise ConfigError(
            "--out-epoch-checkpoints and --out-epoch-predictions go together (few-shot selection "
            "needs both the checkpoints and their predictions)"
        )
    epochs = candidate_epochs(cfg.distill["epochs"], cfg.distill["checkpoint_every"])
    if len(args.out_epoch_checkpoints) != len(epochs):
        raise ConfigError(
            f"--out-epoch-checkpoints: {len(args.out_epoch_checkpoints)} path(s) given, but "
            f"distill.epochs {cfg.distill['epochs']} with checkpoint_every "
            f"{cfg.distill['checkpoint_every']} keeps epochs {epochs}"
        )
    if "mos" not in manifest.columns:
        raise InputError(f"{args.manifest}: no 'mos' column; few-shot selection needs the labelled training images")
    pool = image_rows(manifest, args.manifest, labelled_training_ids(manifest))
    if not pool:
        log.warning("distill: no labelled training image; the epoch predictions will be empty")
    check_images_exist(pool)
    return EpochKeeper(cfg, {e: Path(p) for e, p in zip(epochs, args.out_epoch_checkpoints, strict=True)}, pool)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = DistillSettings.parse(args.settings)
    device = choose_device(cfg.device)
    manifest = read_manifest(args.manifest)
    train_ids = set(manifest.filter(pl.col("split") == "train")["image_id"])
    points, point_counts = load_points(args.points, manifest, train_ids)
    if args.pairs:
        pairs, pair_counts = load_pairs(args.pairs, manifest, train_ids)
    elif cfg.use_pair:
        raise ConfigError("settings.use_pair is true but no --pairs file was given")
    else:
        pairs, pair_counts = pl.DataFrame(schema=PAIR_SCHEMA), {"pair_rows": 0}
    test_rows = image_rows(manifest, args.manifest, manifest.filter(pl.col("split") == "test")["image_id"])
    check_images_exist(test_rows)
    keeper = epoch_keeper(args, cfg, manifest)

    model, loss_df, counts = train(cfg, args.manifest, manifest, points, pairs, device, keeper)
    counts = {**point_counts, **pair_counts, **counts, "test_images": len(test_rows)}
    if keeper is not None:
        counts |= {"epoch_checkpoints": sorted(keeper.paths), "labelled_train_images": len(keeper.pool)}
    preds = predict(
        model,
        test_rows,
        resize=cfg.student["resize"],
        crop=cfg.student["crop"],
        device=device,
        batch_size=cfg.distill["batch_size"],
        amp=cfg.student["amp"],
        num_workers=cfg.student["num_workers"],
        desc="distill predict test",
    )

    provenance = make_provenance(
        "distill",
        settings=cfg.raw,
        settings_hash=stable_hash(cfg.raw),
        model=cfg.model_name,
        device=str(device),
        inputs={"manifest": args.manifest, "points": args.points, "pairs": args.pairs},
        counts=counts,
        selected_epoch=counts["selected_epoch"],
        stage1_epoch=counts["selected_epoch"],
        stage1_selection="teacher",
    )
    save_checkpoint(
        model,
        args.out_model,
        model_name=cfg.model_name,
        stage="distill",
        settings=cfg.raw,
        output_units="teacher_score",
        extra={
            "selected_epoch": str(counts["selected_epoch"]),
            "epoch": str(counts["selected_epoch"]),
            "provenance": provenance,
        },
    )
    write_parquet(loss_df, args.out_losses, provenance)
    if keeper is not None:
        per_epoch = {k: v for k, v in provenance.items() if not k.startswith("stage1_")}
        write_parquet(keeper.predictions(), args.out_epoch_predictions, per_epoch)
    pred_df = pl.DataFrame({"image_id": [r.image_id for r in test_rows], "prediction": preds}, schema=PREDICTION_SCHEMA)
    write_parquet(pred_df, args.out_predictions, provenance)
    log.info(
        "distill: selected epoch %d; wrote %s, %s, %s",
        counts["selected_epoch"],
        args.out_model,
        args.out_losses,
        args.out_predictions,
    )


if __name__ == "__main__":
    run_step(main)
