"""GPU-hours of a config: the work each GPU job does, times per-image costs.

    python -m leaf_steps.tools.estimate_cost --config config/paper/table2_koniq10k.yaml \\
        [--manifest results/<run>/dataset/manifest.parquet] \\
        [--costs benchmarks/costs/h100_teacher_assumed_rtx3090_students_published.json] \\
        [--image-size 1024x1024] [--json out.json]
    leaf estimate-cost ...   (the same)

Work (from the config, following the code of each step):

* teacher scoring, per teacher a distilled variant uses: one point request per image of the
  manifest and one pair request per sampled pair (``pairs.count``, default one per training
  image; twice with ``scoring.both_orders``), in ``scoring.shards`` jobs per kind; each job
  starts its own vLLM server unless the teacher has a ``base_url``. Prefill FLOPs per request
  are counted on the real architectures (``leaf_steps.teachers.cost``), with the visual tokens
  each image costs under the teacher's ``visual_budget`` (shown in the table's work column).
* stage 1 (``distill``), per distilled variant: ``epochs`` x (the training points after the
  holdout, plus 2 x ``pair_batch_size`` pair images per step) trained, the held-out images
  (and the partners their pairs bring) evaluated after every epoch, then the test split; with
  few-shot selection (``distill.selection: mos_subset`` and a ratio > 0) also the labelled training
  images after each candidate epoch (counted as the whole train split: an upper bound when some
  training images have no MOS).
* stage 2 (``calibrate``), per variant x ratio > 0 x seed: ``epochs`` x the calib_train images
  trained and the calib_val images evaluated, the test split at the end (with stage 1, one more
  pass over calib_train and calib_val for the affine start).

Costs (``--costs``, JSON; ``benchmarks/measure_costs.py`` writes one from a measurement):
teacher TFLOP/s per GPU, tensor-parallel efficiency, server start-up by GPU count, student
training / evaluation images per second per model, student job start-up, and the data
loader's decode cost per image as ``ms = ms_fixed + ms_per_megapixel * megapixels`` on one
CPU core (``student.num_workers`` cores feed a job). A student phase runs at the slower of
the GPU and the loader (their sum with ``num_workers: 0``).

Image sizes: from ``--manifest`` (exact; its ``width``/``height`` columns) or, before the data
is there, the dataset's published size (``--image-size`` overrides, e.g. for the AIGC sets
whose sizes vary by generator).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.config import load_config, variant_settings
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.datasets.common import test_count
from leaf_steps.teachers import cost as teacher_cost
from leaf_steps.teachers.visual_budget import check_family, parse_budget
from leaf_steps.training.epochs import candidate_epochs
from leaf_steps.training.holdout import holdout_count
from leaf_steps.training.mos_subsets import subset_sizes

DEFAULT_COSTS = (
    Path(__file__).resolve().parents[2]
    / "benchmarks"
    / "costs"
    / "h100_teacher_assumed_rtx3090_students_published.json"
)

# Published sizes: image count, split sizes and the size LEAF reads (docs/datasets.md).
# AGIQA-3K / AIGIQA-20K mix generators (256 px to 1024 px and beyond): 512x512 is a placeholder
# to override with --image-size or, better, replace with --manifest once prepare_dataset ran.
PUBLISHED: dict[str, dict[str, Any]] = {
    "koniq10k": {"images": 10073, "splits": {"train": 7058, "val": 1000, "test": 2015}},
    "spaq": {"images": 11125, "size": (683, 512)},  # 4:3 photos at a 512 short side
    "agiqa3k": {"images": 2982, "size": (512, 512)},
    "aigiqa20k": {"images": 14000, "size": (512, 512)},
}
REQUIRED_COSTS = (
    "teacher_tflops_per_gpu",
    "tensor_parallel_efficiency",
    "server_startup_s",
    "student_job_startup_s",
    "student_train_images_per_s",
    "student_eval_images_per_s",
    "loader_ms_fixed",
    "loader_ms_per_megapixel",
)


@dataclass
class DatasetShape:
    """What the cost depends on: split sizes and the images' (width, height)."""

    splits: dict[str, int]
    sizes: list[tuple[int, int]]  # one per image, or one shared size
    source: str

    @property
    def images(self) -> int:
        return sum(self.splits.values())

    def size_counts(self) -> list[tuple[tuple[int, int], int]]:
        """Distinct sizes with the number of images of each."""
        if len(self.sizes) == 1:
            return [(self.sizes[0], self.images)]
        return sorted(Counter(self.sizes).items())

    def mean_megapixels(self) -> float:
        sc = self.size_counts()
        return sum(w * h * n for (w, h), n in sc) / max(1, sum(n for _, n in sc)) / 1e6


@dataclass
class Row:
    stage: str
    jobs: int
    gpus_per_job: int
    work: str
    gpu_hours: float
    detail: dict[str, float] = field(default_factory=dict)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size: expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--image-size: sizes must be positive, got {text!r}")
    return w, h


def shape_from_manifest(path: str | Path) -> DatasetShape:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: manifest not found")
    m = pl.read_parquet(path)
    missing = {"split", "width", "height"} - set(m.columns)
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {sorted(missing)}")
    splits = dict(m.group_by("split").len().iter_rows())
    return DatasetShape(
        splits={k: int(v) for k, v in splits.items()},
        sizes=list(zip(m["width"].to_list(), m["height"].to_list())),
        source=str(path),
    )


def shape_from_config(config: dict[str, Any], image_size: tuple[int, int] | None) -> DatasetShape:
    ds = config["dataset"]
    name = ds["name"]
    if name not in PUBLISHED:
        raise InputError(f"dataset {name!r}: no published size; pass --manifest (after prepare_dataset runs)")
    pub = PUBLISHED[name]
    n = pub["images"]
    options = ds.get("options") or {}
    if "splits" in pub and options.get("split", "official") == "official":
        splits = dict(pub["splits"])
    else:
        n_test = test_count(n, ds.get("test_fraction", 0.2))
        splits = {"train": n - n_test, "test": n_test}
    if image_size is not None:
        size, source = image_size, f"published counts, --image-size {image_size[0]}x{image_size[1]}"
    elif name == "koniq10k":
        w, h = (int(v) for v in options.get("resolution", "1024x768").split("x"))
        size, source = (w, h), "published counts and resolution"
    else:
        size, source = pub["size"], "published counts, typical size"
    return DatasetShape(splits=splits, sizes=[size], source=source)


def load_costs(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: costs file not found")
    try:
        costs = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_COSTS if k not in costs]
    if missing:
        raise InputError(f"{path}: missing key(s) {missing}")
    return costs


def _per_model(costs: dict[str, Any], key: str, model: str) -> float:
    table = costs[key]
    base = model.split(".")[0]  # a pinned tag (convnext_base.fb_in1k) costs what its architecture costs
    if base not in table:
        raise InputError(
            f"costs: {key} has no entry for student model {base!r} (has {sorted(table)}); measure it "
            f"with `python benchmarks/measure_costs.py --models {base} --out costs.json` and pass --costs"
        )
    return float(table[base])


# --------------------------------------------------------------------------- work per job


def distill_images(
    config: dict[str, Any], n_train: int, n_test: int, use_point: bool, use_pair: bool
) -> dict[str, float]:
    """Images trained and evaluated by one stage-1 job (distill.train's schedule)."""
    d = config["distill"]
    n_pairs = config["pairs"]["count"] or n_train
    held = holdout_count(n_train, d["holdout_fraction"])
    n_step = n_train - held
    steps = math.ceil(n_step / d["batch_size"])
    trained = (n_step if use_point else 0) + (2 * d["pair_batch_size"] * steps if use_pair else 0)
    # Held-out images, plus the partner of every pair touching exactly one of them.
    share = held / n_train if n_train else 0.0
    partners = n_pairs * 2 * share * (1 - share) if use_pair else 0.0
    evaluated = min(n_train, held + partners)
    eval_images = d["epochs"] * evaluated + n_test
    if d.get("selection", "mos_subset") == "mos_subset" and any(r > 0 for r in config["calibration"]["ratios"]):
        eval_images += len(candidate_epochs(d["epochs"], d.get("checkpoint_every", 1))) * n_train
    return {"train_images": d["epochs"] * trained, "eval_images": eval_images}


def calibrate_images(
    config: dict[str, Any], n_train: int, n_test: int, ratio: float, with_init: bool
) -> dict[str, float]:
    """Images trained and evaluated by one stage-2 job (sample_mos_subset + calibrate)."""
    c = config["calibration"]
    k, n_val = subset_sizes(n_train, ratio, c["val_fraction"])
    n_cal = k - n_val
    evaluated = c["epochs"] * n_val + n_test + ((n_cal + n_val) if with_init else 0)
    return {"train_images": c["epochs"] * n_cal, "eval_images": evaluated}


def teachers_needed(config: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(teachers scoring points, teachers scoring pairs)."""
    variants = [variant_settings(config, v) for v in config["variants"]]
    points = {config["teacher"]} | {v["teacher"] for v in variants if v["distill"]}
    pairs = {v["teacher"] for v in variants if v["distill"] and v["use_pair"]}
    return points, pairs


# --------------------------------------------------------------------------- costing


def teacher_rows(config: dict[str, Any], shape: DatasetShape, costs: dict[str, Any]) -> list[Row]:
    points_for, pairs_for = teachers_needed(config)
    sc = shape.size_counts()
    n_train = shape.splits.get("train", 0)
    n_pairs = (config["pairs"]["count"] or n_train) * (2 if config["scoring"]["both_orders"] else 1)
    shards = config["scoring"]["shards"]
    rows = []
    for name in sorted(points_for | pairs_for):
        t = config["teachers"][name]
        if t.get("backend", "vllm") not in ("vllm", "transformers"):
            continue  # NIQE and the fake teachers run on CPU
        model, max_side = t["model"], t.get("image_max_side", 1024)
        where = f"teachers.{name}.visual_budget"
        budget = parse_budget(t.get("visual_budget"), where)
        if budget is not None:  # the check the backends make: tiles for InternVL, pixels for Qwen-VL
            check_family(
                budget, "internvl" if teacher_cost.arch_for(model).family == "internvl" else "qwen3_vl", model, where
            )
        gpus = max(1, int(t.get("gpus") or 1))
        rate = (
            costs["teacher_tflops_per_gpu"] * 1e12 * gpus * (costs["tensor_parallel_efficiency"] if gpus > 1 else 1.0)
        )
        startup = 0.0 if t.get("base_url") else float(costs["server_startup_s"][str(gpus)])
        # Point requests: exact per size. Pair requests show two images drawn uniformly, so the
        # expected prompt length and its square follow from the per-image token moments (exact
        # for a single size; O(sizes), not O(sizes^2), for a manifest of many sizes).
        c, a, b = teacher_cost.decoder_curve(model)
        text = teacher_cost.TEXT_TOKENS
        per_size = [(teacher_cost.image_cost(model, w, h, max_side, budget), n) for (w, h), n in sc]
        total = sum(n for _, n in sc)
        p_tokens = sum((t + text) * n for (t, _), n in per_size)
        p_flops = sum((v + c + a * (t + text) + b * (t + text) ** 2) * n for (t, v), n in per_size)
        kinds = [("points", shape.images, p_tokens, p_flops)]
        if name in pairs_for:
            mean_t = sum(t * n for (t, _), n in per_size) / total
            mean_t2 = sum(t * t * n for (t, _), n in per_size) / total
            mean_v = sum(v * n for (_, v), n in per_size) / total
            pair_t = text + 2 * mean_t
            # E[(text + X + Y)^2] for independent X, Y with mean mean_t and second moment mean_t2
            pair_t2 = text**2 + 4 * text * mean_t + 2 * mean_t2 + 2 * mean_t**2
            pair_flops = 2 * mean_v + c + a * pair_t + b * pair_t2
            kinds.append(("pairs", n_pairs, pair_t * n_pairs, pair_flops * n_pairs))
        per_image = sum(t * n for (t, _), n in per_size) / total
        view = f"{per_image:,.0f} visual tokens/image, " + (
            f"visual_budget {budget.describe()}" if budget else "the model's default tiling"
        )
        for kind, requests, tokens, flops in kinds:
            seconds = flops / rate + shards * startup
            rows.append(
                Row(
                    f"score_{kind} ({name})",
                    shards,
                    gpus,
                    f"{requests:,} requests, {tokens / 1e6:.1f}M tokens ({view}), {flops / 1e15:.0f} PFLOP",
                    seconds * gpus / 3600,
                    {"requests": requests, "tokens": tokens, "flops": flops, "startup_s": shards * startup},
                )
            )
    return rows


def student_seconds(
    images: dict[str, float], model: str, config: dict[str, Any], shape: DatasetShape, costs: dict[str, Any]
) -> float:
    """Start-up plus the training and evaluation passes. With loader workers a pass runs at the
    slower of the GPU and the workers; with ``num_workers: 0`` decoding and compute alternate in
    one process, so their times add. Rates measured at another crop scale with its pixel count."""
    loader_s = (costs["loader_ms_fixed"] + costs["loader_ms_per_megapixel"] * shape.mean_megapixels()) / 1000.0
    workers = int(config["student"]["num_workers"])
    scale = (costs.get("student_crop", 224) / config["student"]["crop"]) ** 2
    total = costs["student_job_startup_s"]
    for kind in ("train", "eval"):
        compute_s = 1.0 / (_per_model(costs, f"student_{kind}_images_per_s", model) * scale)
        per_image = compute_s + loader_s if workers == 0 else max(compute_s, loader_s / workers)
        total += images[f"{kind}_images"] * per_image
    return total


def student_rows(config: dict[str, Any], shape: DatasetShape, costs: dict[str, Any]) -> list[Row]:
    n_train, n_test = shape.splits.get("train", 0), shape.splits.get("test", 0)
    s1 = {"jobs": 0, "seconds": 0.0, "train": 0.0, "eval": 0.0}
    s2 = {"jobs": 0, "seconds": 0.0, "train": 0.0, "eval": 0.0}
    ratios = [r for r in config["calibration"]["ratios"] if r > 0]
    for name in config["variants"]:
        v = variant_settings(config, name)
        if v["distill"]:
            work = distill_images(config, n_train, n_test, v["use_point"], v["use_pair"])
            s1["jobs"] += 1
            s1["seconds"] += student_seconds(work, v["student_model"], config, shape, costs)
            s1["train"] += work["train_images"]
            s1["eval"] += work["eval_images"]
        for ratio in ratios:
            work = calibrate_images(config, n_train, n_test, ratio, v["distill"])
            seconds = student_seconds(work, v["student_model"], config, shape, costs)
            n = len(config["calibration"]["seeds"])
            s2["jobs"] += n
            s2["seconds"] += n * seconds
            s2["train"] += n * work["train_images"]
            s2["eval"] += n * work["eval_images"]
    rows = []
    for stage, s in (("distill (stage 1)", s1), ("calibrate (stage 2)", s2)):
        if s["jobs"]:
            rows.append(
                Row(
                    stage,
                    s["jobs"],
                    1,
                    f"{s['train'] / 1e6:.2f}M images trained, {s['eval'] / 1e6:.2f}M evaluated",
                    s["seconds"] / 3600,
                    {
                        "train_images": s["train"],
                        "eval_images": s["eval"],
                        "startup_s": s["jobs"] * costs["student_job_startup_s"],
                    },
                )
            )
    return rows


def estimate(config: dict[str, Any], shape: DatasetShape, costs: dict[str, Any]) -> list[Row]:
    return teacher_rows(config, shape, costs) + student_rows(config, shape, costs)


def to_markdown(
    config: dict[str, Any], shape: DatasetShape, rows: list[Row], costs_path: str, costs: dict[str, Any]
) -> str:
    total = sum(r.gpu_hours for r in rows)
    lines = [
        f"GPU time of `{config['run_name']}` on {costs.get('device', 'the costed GPU')} "
        f"(costs: `{costs_path}`; images: {shape.source}, {shape.images:,} images, "
        f"splits {dict(sorted(shape.splits.items()))})",
        "",
        "| stage | jobs | GPUs/job | work | GPU-hours |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.stage} | {r.jobs} | {r.gpus_per_job} | {r.work} | {r.gpu_hours:.2f} |" for r in rows]
    lines.append(f"| **total** | {sum(r.jobs for r in rows)} | | | **{total:.1f}** |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="leaf estimate-cost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="a complete config (e.g. config/paper/table2_koniq10k.yaml)")
    p.add_argument("--manifest", help="the run's dataset manifest (exact sizes); else published sizes")
    p.add_argument("--costs", default=str(DEFAULT_COSTS), help="per-image costs JSON (default: %(default)s)")
    p.add_argument("--image-size", type=parse_size, help="WIDTHxHEIGHT of every image (without --manifest)")
    p.add_argument("--json", help="also write the rows here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_config(args.config)
    costs = load_costs(args.costs)
    shape = shape_from_manifest(args.manifest) if args.manifest else shape_from_config(config, args.image_size)
    rows = estimate(config, shape, costs)
    shown = os.path.relpath(args.costs) if Path(args.costs).resolve().is_relative_to(Path.cwd()) else args.costs
    print(to_markdown(config, shape, rows, shown, costs))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "config": args.config,
                    "costs": args.costs,
                    "images": shape.images,
                    "rows": [asdict(r) for r in rows],
                    "total_gpu_hours": sum(r.gpu_hours for r in rows),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    run_step(main)
