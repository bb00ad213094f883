"""The GPU-hours estimator: visual tokens, FLOP counts, work per job, and the CLI.

The work model is checked against what distill and calibrate really push through the
network on a small dataset (a hook on the student counts every image by mode); the FLOP
curves are checked against direct FlopCounterMode counts at lengths they were not fitted on.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from leaf_steps import calibrate, distill
from leaf_steps.core.config import load_config
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.sample_pairs import sample_pairs
from leaf_steps.teachers import cost as teacher_cost
from leaf_steps.teachers.visual_budget import VisualBudget
from leaf_steps.tools import estimate_cost
from leaf_steps.training import models as student_models
from leaf_steps.training.epochs import candidate_epochs
from leaf_steps.training.models import build_model as models_build_model

# Three layers each: the coefficients are counted on one- and two-layer models and extended to the
# depth, which the tests below check against models built at full depth.
TINY = teacher_cost.TeacherArch(
    "internvl",
    hidden=64,
    intermediate=128,
    layers=3,
    heads=4,
    kv_heads=2,
    v_hidden=32,
    v_intermediate=64,
    v_layers=3,
    v_heads=4,
)
ROOT = Path(__file__).resolve().parents[1]


def paper_config(name: str) -> dict:
    return load_config(ROOT / "config" / name)


# --------------------------------------------------------------------------- visual tokens


@pytest.mark.parametrize(
    "size, tokens",
    [
        ((1024, 768), 13 * 256),  # 4:3 -> 12 tiles + thumbnail
        ((683, 512), 13 * 256),  # the tile grid follows the aspect ratio, not the resolution
        ((2048, 1536), 13 * 256),  # downscaled to 1024x768 first (image_max_side)
        ((512, 512), 256),  # square up to 633 px: one tile, no thumbnail
        ((1024, 1024), 10 * 256),  # square above 950 px: 3x3 + thumbnail
    ],
)
def test_internvl_visual_tokens_follow_the_processor(size, tokens):
    assert teacher_cost.image_layout("internvl", *size)[0] == tokens


@pytest.mark.parametrize(
    "size, tokens", [((1024, 768), 768), ((683, 512), 336), ((512, 512), 256), ((200, 200), 64), ((4096, 3072), 768)]
)
def test_qwen3vl_visual_tokens_follow_the_processor(size, tokens):
    assert teacher_cost.image_layout("qwen3vl", *size)[0] == tokens


@pytest.mark.parametrize(
    "family, budget, size, tokens",
    [
        ("internvl", VisualBudget(max_tiles=1), (1024, 768), 256),  # one tile, no thumbnail
        ("internvl", VisualBudget(max_tiles=4), (1024, 768), 5 * 256),  # 2x2 + thumbnail
        ("internvl", VisualBudget(max_tiles=12), (1024, 768), 13 * 256),  # the default, spelled out
        ("qwen3vl", VisualBudget(max_pixels=200_000), (1024, 768), 192),  # 512x384 px -> 16x12 tokens
        ("qwen3vl", VisualBudget(max_pixels=10**8, min_pixels=10**6), (200, 200), 1024),  # upscaled to 1024x1024
    ],
)
def test_visual_budget_sets_the_tokens_per_image(family, budget, size, tokens):
    assert teacher_cost.image_layout(family, *size, budget=budget)[0] == tokens


def test_one_internvl_tile_costs_about_a_tenth_of_the_default_view():
    """The choice issue 9 asks users to be able to make knowingly: InternVL at 1024x768, 13 tiles vs 1."""
    config = paper_config("paper/table2_koniq10k.yaml")
    config["pairs"]["count"] = 1_000_000
    shape = estimate_cost.DatasetShape(splits={"train": 1_000_000}, sizes=[(1024, 768)], source="test")
    default = {r.stage: r for r in estimate_cost.teacher_rows(config, shape, costs())}
    config["teachers"]["internvl3_5_8b"]["visual_budget"] = {"max_tiles": 1}
    one_tile = {r.stage: r for r in estimate_cost.teacher_rows(config, shape, costs())}
    for stage in default:
        ratio = (one_tile[stage].gpu_hours - one_tile[stage].detail["startup_s"] / 3600) / (
            default[stage].gpu_hours - default[stage].detail["startup_s"] / 3600
        )
        assert 0.07 < ratio < 0.13, (stage, ratio)
    assert one_tile["score_points (internvl3_5_8b)"].detail["tokens"] == 1_000_000 * (256 + teacher_cost.TEXT_TOKENS)
    assert "256 visual tokens/image, visual_budget {'max_tiles': 1}" in one_tile["score_points (internvl3_5_8b)"].work
    assert "3,328 visual tokens/image, the model's default tiling" in default["score_points (internvl3_5_8b)"].work
    config["teachers"]["internvl3_5_8b"]["visual_budget"] = {"max_pixels": 200_000}
    with pytest.raises(ConfigError, match=r"teachers\.internvl3_5_8b\.visual_budget\.max_pixels: .*give max_tiles"):
        estimate_cost.teacher_rows(config, shape, costs())


def test_unknown_teacher_model_is_a_clear_error():
    with pytest.raises(KeyError, match="no cost model for teacher model 'some/vlm'"):
        teacher_cost.arch_for("some/vlm")
    assert teacher_cost.arch_for("/models/InternVL3_5-8B") is teacher_cost.ARCHS["OpenGVLab/InternVL3_5-8B"]


# --------------------------------------------------------------------------- FLOP curves


def test_decoder_curve_predicts_counts_it_was_not_fitted_on():
    from transformers import Qwen3Config, Qwen3Model

    c, a, b = teacher_cost.decoder_coefficients(TINY)
    cfg = Qwen3Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=TINY.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=128,
        vocab_size=teacher_cost.VOCAB,
    )
    with torch.device("meta"):
        model = Qwen3Model(cfg)
    for n in (100, 3000):
        with torch.device("meta"):
            x = torch.empty(1, n, 64)
        assert teacher_cost._count(model, inputs_embeds=x) == pytest.approx(c + a * n + b * n * n, rel=1e-9)
    # The linear term is two FLOPs per weight of the decoder layers (the embedding is not used).
    decoder_weights = sum(p.numel() for n_, p in model.named_parameters() if n_.startswith("layers.") and p.dim() == 2)
    assert a == pytest.approx(2 * decoder_weights, rel=0.01)
    assert b > 0 and abs(c) < a


def test_vision_curve_predicts_counts_it_was_not_fitted_on():
    c, a, b = teacher_cost.vision_coefficients(TINY)
    c0, a0, b0 = teacher_cost._quadratic(lambda p: teacher_cost._tower_flops(TINY, math.isqrt(p), 14), 256, 576, 1024)
    assert (c, b) == (c0, b0) and a > a0  # the projector adds a per-patch cost
    for side in (8, 40):
        p = side * side
        assert teacher_cost._tower_flops(TINY, side, 14) == pytest.approx(c0 + a0 * p + b0 * p * p, rel=1e-9)
    # The tower at its full depth, counted directly: what one- and two-layer counts extend to.
    assert teacher_cost._tower_flops(TINY, 24, 14, layers=TINY.v_layers) == teacher_cost._at_depth(
        lambda n: teacher_cost._tower_flops(TINY, 24, 14, layers=n), TINY.v_layers
    )


def test_request_flops_of_the_default_teacher_are_about_twice_its_parameters_per_token():
    tokens, flops = teacher_cost.request_flops("OpenGVLab/InternVL3_5-8B", [(1024, 768)])
    assert tokens == 13 * 256 + teacher_cost.TEXT_TOKENS
    # ~8.5B parameters: 2 FLOPs each per token, plus attention and the vision tower's share.
    assert 2 * 8.2e9 < flops / tokens < 2 * 8.5e9 * 1.3
    _, pair = teacher_cost.request_flops("OpenGVLab/InternVL3_5-8B", [(1024, 768), (1024, 768)])
    assert 2 * flops < pair < 2.5 * flops  # longer sequence: attention grows faster than linear


# --------------------------------------------------------------------------- work per job, against the real steps

N_TRAIN, N_TEST = 30, 10
STUDENT = {"model": "resnet10t", "pretrained": False, "resize": 20, "crop": 16, "num_workers": 0, "amp": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_TRAIN + N_TEST):
        path = root / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
        rows.append(
            {
                "image_id": f"im{i:02d}",
                "path": str(path),
                "split": "train" if i < N_TRAIN else "test",
                "mos": float(rng.uniform(1, 5)),
                "width": 20,
                "height": 20,
            }
        )
    manifest = pl.DataFrame(rows)
    manifest.write_parquet(root / "manifest.parquet")
    train_ids = manifest.filter(pl.col("split") == "train")["image_id"].to_list()
    pl.DataFrame({"image_id": manifest["image_id"], "teacher_score": rng.uniform(1, 5, manifest.height)}).write_parquet(
        root / "points.parquet"
    )
    pairs = sample_pairs(train_ids, None, 0)
    pairs.with_columns(t_ab=pl.lit(1, pl.Int8), confidence=pl.lit(0.9)).write_parquet(root / "pairs.parquet")
    return root, manifest


class Counter:
    def __init__(self):
        self.train = self.eval = 0

    def build(self, real):
        def build_model(name, pretrained):
            model = real(name, pretrained)
            model.register_forward_pre_hook(self.hook)
            return model

        return build_model

    def hook(self, module, args):
        if module.training:
            self.train += args[0].shape[0]
        else:
            self.eval += args[0].shape[0]


def paper_like_config(**distill_over):
    config = paper_config("paper/table2_koniq10k.yaml")
    config["distill"].update(
        {"epochs": 3, "batch_size": 8, "pair_batch_size": 4, "holdout_fraction": 0.2, **distill_over}
    )
    config["calibration"].update({"epochs": 2, "batch_size": 4})
    return config


def out_args(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return [
        "--out-model",
        str(folder / "m.safetensors"),
        "--out-losses",
        str(folder / "l.parquet"),
        "--out-predictions",
        str(folder / "p.parquet"),
    ]


@pytest.mark.parametrize("use_pair,selection", [(True, "mos_subset"), (False, "teacher")])
def test_distill_work_matches_what_distill_runs(small, tmp_path, monkeypatch, use_pair, selection):
    root, _ = small
    config = paper_like_config(selection=selection, checkpoint_every=2)
    # With few-shot selection, the rule asks for the candidate epochs' checkpoints and outputs.
    per_epoch = []
    if selection == "mos_subset":
        epochs = candidate_epochs(config["distill"]["epochs"], 2)
        per_epoch = [
            "--out-epoch-checkpoints",
            *(str(tmp_path / f"e{e}.safetensors") for e in epochs),
            "--out-epoch-predictions",
            str(tmp_path / "epoch_predictions.parquet"),
        ]
    counter = Counter()
    monkeypatch.setattr(distill, "build_model", counter.build(models_build_model))
    settings = {
        "student": STUDENT,
        "distill": config["distill"],
        "use_point": True,
        "use_pair": use_pair,
        "use_confidence": True,
        "student_model": None,
        "device": "cpu",
        "seed": 0,
    }
    distill.main(
        [
            "--manifest",
            str(root / "manifest.parquet"),
            "--points",
            str(root / "points.parquet"),
            *(["--pairs", str(root / "pairs.parquet")] if use_pair else []),
            *out_args(tmp_path),
            "--settings",
            json.dumps(settings),
            *per_epoch,
        ]
    )
    work = estimate_cost.distill_images(config, N_TRAIN, N_TEST, True, use_pair)
    assert counter.train == work["train_images"]  # the schedule is exact
    # The evaluated count depends on which pairs touch the held-out images: an expectation.
    assert counter.eval == pytest.approx(work["eval_images"], rel=0.15)


@pytest.mark.parametrize("with_init", [False, True])
def test_calibrate_work_matches_what_calibrate_runs(small, tmp_path, monkeypatch, with_init):
    from leaf_steps.sample_mos_subset import sample_subset

    root, manifest = small
    config = paper_like_config()
    ratio = 0.5
    subset = sample_subset(manifest.filter(pl.col("split") == "train"), ratio, 0, config["calibration"]["val_fraction"])
    subset.write_parquet(tmp_path / "subset.parquet")
    init = []
    if with_init:
        settings = {
            "student": STUDENT,
            "distill": config["distill"],
            "use_point": True,
            "use_pair": False,
            "use_confidence": True,
            "student_model": None,
            "device": "cpu",
            "seed": 0,
        }
        distill.main(
            [
                "--manifest",
                str(root / "manifest.parquet"),
                "--points",
                str(root / "points.parquet"),
                *out_args(tmp_path / "s1"),
                "--settings",
                json.dumps(settings),
            ]
        )
        init = ["--init", str(tmp_path / "s1" / "m.safetensors")]
    counter = Counter()
    counted = counter.build(models_build_model)
    monkeypatch.setattr(calibrate, "build_model", counted)
    monkeypatch.setattr(student_models, "build_model", counted)  # load_checkpoint builds the stage-1 model
    settings = {
        "student": STUDENT,
        "calibration": config["calibration"],
        "student_model": None,
        "device": "cpu",
        "seed": 0,
    }
    calibrate.main(
        [
            "--manifest",
            str(root / "manifest.parquet"),
            "--subset",
            str(tmp_path / "subset.parquet"),
            *out_args(tmp_path / "s2"),
            "--settings",
            json.dumps(settings),
            *init,
        ]
    )
    work = estimate_cost.calibrate_images(config, N_TRAIN, N_TEST, ratio, with_init)
    assert (counter.train, counter.eval) == (work["train_images"], work["eval_images"])


# --------------------------------------------------------------------------- costing and CLI


def costs(**over):
    c = json.loads(estimate_cost.DEFAULT_COSTS.read_text())
    c.update(over)
    return c


def test_student_phase_runs_at_the_slower_of_gpu_and_loader():
    config = paper_config("paper/table2_koniq10k.yaml")
    shape = estimate_cost.DatasetShape({"train": 1000, "test": 100}, [(1000, 1000)], "test")
    work = {"train_images": 10000.0, "eval_images": 0.0}
    fast_loader = costs(loader_ms_fixed=0.0, loader_ms_per_megapixel=1.0, student_job_startup_s=0)  # 8000 img/s
    slow_loader = costs(loader_ms_fixed=0.0, loader_ms_per_megapixel=80.0, student_job_startup_s=0)  # 100 img/s
    gpu = fast_loader["student_train_images_per_s"]["convnext_base"]
    assert estimate_cost.student_seconds(work, "convnext_base", config, shape, fast_loader) == pytest.approx(
        10000 / gpu
    )
    assert estimate_cost.student_seconds(work, "convnext_base.fb_in1k", config, shape, slow_loader) == pytest.approx(
        100.0
    )


def test_in_process_loading_adds_decode_to_compute_and_rates_scale_with_the_crop():
    config = paper_config("paper/table2_koniq10k.yaml")
    config["student"]["num_workers"] = 0
    shape = estimate_cost.DatasetShape({"train": 1000, "test": 100}, [(1000, 1000)], "test")
    work = {"train_images": 1000.0, "eval_images": 500.0}
    c = costs(loader_ms_fixed=2.0, loader_ms_per_megapixel=8.0, student_job_startup_s=5.0)  # 10 ms per image
    train, ev = c["student_train_images_per_s"]["resnet18"], c["student_eval_images_per_s"]["resnet18"]
    serial = 5.0 + 1000 * (1 / train + 0.010) + 500 * (1 / ev + 0.010)
    assert estimate_cost.student_seconds(work, "resnet18", config, shape, c) == pytest.approx(serial)
    config["student"]["crop"] = 112  # a quarter of the pixels the rates were measured at
    quarter = 5.0 + 1000 * (1 / (4 * train) + 0.010) + 500 * (1 / (4 * ev) + 0.010)
    assert estimate_cost.student_seconds(work, "resnet18", config, shape, c) == pytest.approx(quarter)


def test_teacher_hours_scale_with_the_rate_and_count_every_server_start():
    config = paper_config("paper/table2_koniq10k.yaml")
    shape = estimate_cost.shape_from_config(config, None)
    base = {r.stage: r for r in estimate_cost.teacher_rows(config, shape, costs())}
    fast = {r.stage: r for r in estimate_cost.teacher_rows(config, shape, costs(teacher_tflops_per_gpu=500))}
    points = base["score_points (internvl3_5_8b)"]
    assert points.detail["requests"] == 10073 and points.jobs == 4
    assert points.detail["tokens"] == 10073 * (13 * 256 + teacher_cost.TEXT_TOKENS)
    assert base["score_pairs (internvl3_5_8b)"].detail["requests"] == 7058
    start = points.detail["startup_s"] / 3600
    assert start == pytest.approx(4 * 300 / 3600)
    assert fast["score_points (internvl3_5_8b)"].gpu_hours - start == pytest.approx((points.gpu_hours - start) / 2)


def test_paper_table4_counts_every_job(tmp_path):
    config = paper_config("paper/table4_agiqa3k.yaml")
    rows = {r.stage: r for r in estimate_cost.estimate(config, estimate_cost.shape_from_config(config, None), costs())}
    teachers = [s for s in rows if s.startswith("score_")]
    assert len(teachers) == 8  # points + pairs for each of the four teachers
    assert rows["score_points (internvl3_5_38b)"].gpus_per_job == 2
    assert rows["distill (stage 1)"].jobs == 8
    assert rows["calibrate (stage 2)"].jobs == 8 * 5  # ratio 0.1 x 5 seeds per variant


def test_manifest_sizes_are_used_exactly(small, tmp_path):
    _, manifest = small
    path = tmp_path / "m.parquet"
    manifest.with_columns(
        width=pl.when(pl.col("split") == "train").then(1024).otherwise(512),
        height=pl.when(pl.col("split") == "train").then(768).otherwise(512),
    ).write_parquet(path)
    shape = estimate_cost.shape_from_manifest(path)
    assert shape.splits == {"train": N_TRAIN, "test": N_TEST}
    config = paper_config("paper/table1_agiqa3k.yaml")
    points, pairs = estimate_cost.teacher_rows(config, shape, costs())
    assert points.detail["tokens"] == N_TRAIN * (3328 + 100) + N_TEST * (256 + 100)
    assert points.detail["flops"] == pytest.approx(
        N_TRAIN * teacher_cost.request_flops("OpenGVLab/InternVL3_5-8B", [(1024, 768)])[1]
        + N_TEST * teacher_cost.request_flops("OpenGVLab/InternVL3_5-8B", [(512, 512)])[1],
        rel=1e-9,
    )
    # Pairs: the expectation over two uniformly drawn images equals the mean over ordered size pairs.
    sizes = [((1024, 768), N_TRAIN), ((512, 512), N_TEST)]
    total = N_TRAIN + N_TEST
    brute = [0.0, 0.0]
    for sa, na in sizes:
        for sb, nb in sizes:
            tok, fl = teacher_cost.request_flops("OpenGVLab/InternVL3_5-8B", [sa, sb])
            brute[0] += tok * na * nb / total**2
            brute[1] += fl * na * nb / total**2
    assert pairs.detail["requests"] == N_TRAIN
    assert pairs.detail["tokens"] == pytest.approx(brute[0] * N_TRAIN, rel=1e-9)
    assert pairs.detail["flops"] == pytest.approx(brute[1] * N_TRAIN, rel=1e-9)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "cost.json"
    estimate_cost.main(["--config", str(ROOT / "config/paper/table2_spaq.yaml"), "--json", str(out)])
    text = capsys.readouterr().out
    assert "| score_points (internvl3_5_8b) | 4 | 1 | 11,125 requests" in text
    assert "| calibrate (stage 2) | 20 |" in text  # 2 variants x 2 ratios x 5 seeds
    data = json.loads(out.read_text())
    assert data["total_gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in data["rows"]))


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="--image-size: expected WIDTHxHEIGHT"):
        estimate_cost.parse_size("1024by768")
    bad = tmp_path / "costs.json"
    bad.write_text(json.dumps({"teacher_tflops_per_gpu": 1}))
    with pytest.raises(InputError, match="costs.json: missing key"):
        estimate_cost.load_costs(bad)
    with pytest.raises(InputError, match="manifest lacks column"):
        pl.DataFrame({"image_id": ["a"]}).write_parquet(tmp_path / "m.parquet")
        estimate_cost.shape_from_manifest(tmp_path / "m.parquet")
    config = paper_config("demo.yaml")
    with pytest.raises(InputError, match="no published size; pass --manifest"):
        estimate_cost.shape_from_config(config, None)
    with pytest.raises(InputError, match="no entry for student model 'vit_huge'"):
        estimate_cost._per_model(costs(), "student_train_images_per_s", "vit_huge")


def test_measure_costs_writes_a_costs_file_the_estimator_accepts(tmp_path, capsys):
    import importlib.util

    path = ROOT / "benchmarks" / "measure_costs.py"
    spec = importlib.util.spec_from_file_location("measure_costs", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "costs.json"
    bench.main(
        [
            "--device",
            "cpu",
            "--models",
            "resnet10t",
            "--quick",
            "--resize",
            "40",
            "--crop",
            "32",
            "--batch",
            "4",
            "--out",
            str(out),
        ]
    )
    assert "loader, one core (decode + resize 40 + augment to 32)" in capsys.readouterr().out
    measured = estimate_cost.load_costs(out)
    assert measured["student_train_images_per_s"]["resnet10t"] > 0
    assert measured["student_eval_images_per_s"]["resnet10t"] > 0
    assert measured["student_job_startup_s"] > 0 and measured["student_crop"] == 32
    # The loader line is a least-squares fit of the timings the file records (their sign is the
    # machine's business: a loaded machine can time the larger JPEG faster).
    loader_ms = dict(re.findall(r"(\d+x\d+): ([\d.]+) ms", measured["sources"]["loader_ms"]))
    fixed, per_mp = bench.fit_loader({k: float(v) for k, v in loader_ms.items()})
    assert len(loader_ms) >= 2 and measured["loader_ms_fixed"] >= 0
    assert (measured["loader_ms_fixed"], measured["loader_ms_per_megapixel"]) == pytest.approx(
        (round(fixed, 3), round(per_mp, 3)), abs=0.02
    )
    assert bench.fit_loader({"1000x1000": 12.0, "2000x1000": 20.0, "500x500": 6.0}) == pytest.approx((4.0, 8.0))
    assert measured["teacher_tflops_per_gpu"] == costs()["teacher_tflops_per_gpu"]  # not measured: kept
    assert "measured by benchmarks/measure_costs.py" in measured["sources"]["student_train_images_per_s"]
    config = paper_config("paper/table2_koniq10k.yaml")
    config["student"].update(model="resnet10t", crop=32)
    rows = estimate_cost.student_rows(config, estimate_cost.shape_from_config(config, None), measured)
    assert [r.stage for r in rows] == ["distill (stage 1)", "calibrate (stage 2)"]
