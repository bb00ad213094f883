"""The CUDA paths: bf16 autocast and pinned host memory in student training and prediction
(leaf_steps.training, through distill and calibrate), and the transformers teacher on a GPU.

Marked ``gpu``: they run wherever torch sees a CUDA device (``pytest -m gpu`` runs only them)
and are skipped with the reason elsewhere (tests/conftest.py). Every assertion compares the
GPU result with the CPU float32 path or checks the mechanism itself (dtype inside autocast,
``is_pinned`` of the batches), so a silently disabled autocast or a CPU fallback fails.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from scipy import stats

from leaf_steps import calibrate, distill
from leaf_steps.core.io import read_provenance
from leaf_steps.training import models as student_models
from leaf_steps.training.data import image_rows, read_manifest
from leaf_steps.training.data import make_loader as data_make_loader
from leaf_steps.training.models import build_model as models_build_model
from leaf_steps.training.models import load_checkpoint
from leaf_steps.training.scoring import predict

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
STUDENT = {"model": "resnet10t", "pretrained": False, "resize": 40, "crop": 32, "num_workers": 0, "amp": True}
DISTILL = {
    "epochs": 2,
    "batch_size": 8,
    "pair_batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "lambda_dis": 0.5,
    "holdout_fraction": 0.25,
    "seed": 0,
}
CALIB = {"epochs": 2, "batch_size": 8, "lr": 3e-4, "weight_decay": 0.05, "lambda_cal": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 train + 8 test images whose quality is their brightness; teacher scores and MOS follow it."""
    root = tmp_path_factory.mktemp("gpu_data")
    rng = np.random.default_rng(3)
    rows, points, subset = [], [], []
    for i, b in enumerate(np.linspace(30, 220, 32)):
        path = root / f"g{i:02d}.png"
        Image.fromarray(np.clip(b + rng.normal(0, 15, (48, 48, 3)), 0, 255).astype(np.uint8)).save(path)
        split = "test" if i % 4 == 3 else "train"
        rows.append(
            {"image_id": f"g{i:02d}", "path": str(path), "mos": None, "split": split, "width": 48, "height": 48}
        )
        points.append({"image_id": f"g{i:02d}", "teacher_score": 1 + 4 * (b - 30) / 190})
        if split == "train":
            subset.append(
                {"image_id": f"g{i:02d}", "role": "calib_val" if i % 3 == 0 else "calib_train", "mos": float(b / 2.2)}
            )
    train = [r["image_id"] for r in rows if r["split"] == "train"]
    score = {p["image_id"]: p["teacher_score"] for p in points}
    a = rng.choice(train, 40)
    b_ = [rng.choice([t for t in train if t != x]) for x in a]
    pl.DataFrame(
        rows,
        schema={
            "image_id": pl.String,
            "path": pl.String,
            "mos": pl.Float64,
            "split": pl.String,
            "width": pl.Int32,
            "height": pl.Int32,
        },
    ).write_parquet(root / "manifest.parquet")
    pl.DataFrame(points).write_parquet(root / "points.parquet")
    pl.DataFrame(
        {
            "a_id": a,
            "b_id": b_,
            "t_ab": [int(score[x] >= score[y]) for x, y in zip(a, b_)],
            "confidence": rng.uniform(0.3, 1.0, len(a)),
        }
    ).write_parquet(root / "pairs.parquet")
    pl.DataFrame(subset).write_parquet(root / "subset.parquet")
    return root


class Recorder:
    """Wraps student.make_loader and the model's forward: pinned batches, output dtypes by mode."""

    def __init__(self, monkeypatch):
        self.pinned: list[bool] = []
        self.dtypes: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
        real_loader, real_build = data_make_loader, models_build_model

        def make_loader(*args, **kwargs):
            return _PinCheck(real_loader(*args, **kwargs), self.pinned)

        def build_model(*args, **kwargs):
            model = real_build(*args, **kwargs)
            model.register_forward_hook(lambda m, inp, out: self.dtypes[m.training].add(out.dtype))
            return model

        for step in (distill, calibrate):  # the stages import both by name
            monkeypatch.setattr(step, "make_loader", make_loader)
            monkeypatch.setattr(step, "build_model", build_model)
        monkeypatch.setattr(student_models, "build_model", build_model)  # load_checkpoint's stage-1 model


class _PinCheck:
    """A loader that notes whether each batch it yields sits in pinned (page-locked) host memory."""

    def __init__(self, loader, sink: list[bool]):
        self.loader, self.sink = loader, sink

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, idx in self.loader:
            self.sink.append(bool(images.is_pinned()))
            yield images, idx


def run_distill(data, out, amp=True, device="cuda"):
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "student": {**STUDENT, "amp": amp},
        "distill": DISTILL,
        "use_point": True,
        "use_pair": True,
        "use_confidence": True,
        "student_model": None,
        "device": device,
        "seed": 0,
    }
    distill.main(
        [
            "--manifest",
            str(data / "manifest.parquet"),
            "--points",
            str(data / "points.parquet"),
            "--pairs",
            str(data / "pairs.parquet"),
            "--out-model",
            str(out / "m.safetensors"),
            "--out-losses",
            str(out / "l.parquet"),
            "--out-predictions",
            str(out / "p.parquet"),
            "--settings",
            json.dumps(settings),
        ]
    )
    return out


def test_distill_on_cuda_trains_in_bf16_autocast_from_pinned_batches(data, tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    out = run_distill(data, tmp_path / "s1")
    assert rec.pinned and all(rec.pinned)  # every batch, training and prediction
    assert rec.dtypes[True] == {torch.bfloat16} and rec.dtypes[False] == {torch.bfloat16}
    assert read_provenance(out / "l.parquet")["device"].startswith("cuda")
    # The weights stay float32 under autocast, and the checkpoint reloads on the CPU.
    model, meta = load_checkpoint(out / "m.safetensors")
    assert all(p.dtype == torch.float32 for p in model.parameters()) and meta["stage"] == "distill"
    losses = pl.read_parquet(out / "l.parquet")
    assert losses["train_loss"].is_finite().all() and losses["val_loss"].is_finite().all()


def test_cuda_bf16_predictions_match_cpu_float32(data, tmp_path):
    out = run_distill(data, tmp_path / "s1")
    model, _ = load_checkpoint(out / "m.safetensors")
    manifest = read_manifest(data / "manifest.parquet")
    rows = image_rows(manifest, data / "manifest.parquet")
    cpu = predict(model, rows, resize=40, crop=32, device="cpu", amp=False)
    gpu = predict(model.to(CUDA), rows, resize=40, crop=32, device=CUDA, amp=True)
    gpu32 = predict(model, rows, resize=40, crop=32, device=CUDA, amp=False)
    np.testing.assert_allclose(gpu32, cpu, atol=1e-3 * (1 + np.abs(cpu).max()))
    # bf16 keeps about 3 significant digits: close, and the same ranking.
    assert np.abs(gpu - cpu).max() < 0.05 * (np.ptp(cpu) + 1e-6) + 1e-2
    assert stats.spearmanr(gpu, cpu).statistic > 0.98
    # The file written by distill on the GPU is those bf16 predictions of the test split.
    written = pl.read_parquet(out / "p.parquet")
    test_rows = image_rows(manifest, data / "manifest.parquet", written["image_id"])
    cpu_test = predict(model.cpu(), test_rows, resize=40, crop=32, device="cpu")
    assert np.abs(written["prediction"].to_numpy() - cpu_test).max() < 0.05 * (np.ptp(cpu_test) + 1e-6) + 1e-2


def test_calibrate_on_cuda_uses_autocast_and_pinned_batches(data, tmp_path, monkeypatch):
    s1 = run_distill(data, tmp_path / "s1")
    rec = Recorder(monkeypatch)
    out = tmp_path / "s2"
    out.mkdir()
    settings = {"student": STUDENT, "calibration": CALIB, "student_model": None, "device": "cuda", "seed": 0}
    calibrate.main(
        [
            "--manifest",
            str(data / "manifest.parquet"),
            "--subset",
            str(data / "subset.parquet"),
            "--init",
            str(s1 / "m.safetensors"),
            "--out-model",
            str(out / "m.safetensors"),
            "--out-losses",
            str(out / "l.parquet"),
            "--out-predictions",
            str(out / "p.parquet"),
            "--settings",
            json.dumps(settings),
        ]
    )
    assert rec.pinned and all(rec.pinned)
    assert rec.dtypes[True] == {torch.bfloat16}
    preds = pl.read_parquet(out / "p.parquet")["prediction"].to_numpy()
    assert np.isfinite(preds).all()
    model, meta = load_checkpoint(out / "m.safetensors")
    assert meta["output_units"] == "mos"
    manifest = read_manifest(data / "manifest.parquet")
    ids = pl.read_parquet(out / "p.parquet")["image_id"]
    cpu = predict(model, image_rows(manifest, data / "manifest.parquet", ids), resize=40, crop=32)
    assert np.abs(preds - cpu).max() < 0.05 * (np.ptp(cpu) + 1e-6) + 0.5  # MOS units (0..100)


# --------------------------------------------------------------------------- transformers teacher

PROMPTS = {
    "point": "How would you rate the overall perceptual quality of this image? "
    "Answer with exactly one word: Excellent, Good, Fair, Poor, or Bad.",
    "pair": "The first image is Image A and the second image is Image B. "
    "Which image has higher overall perceptual quality? Answer with one letter: A or B.",
}
TEACHER = {"backend": "transformers", "model": "tiny:qwen2_vl", "batch_size": 3}


@pytest.fixture(scope="module")
def teacher_images(tmp_path_factory):
    from leaf_steps.teachers import ImageRef

    folder = tmp_path_factory.mktemp("gpu_teacher")
    rng = np.random.default_rng(5)
    refs = []
    for i, (h, w) in enumerate([(96, 96), (64, 128), (128, 56), (48, 48)]):
        path = folder / f"t{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        refs.append(ImageRef(f"t{i}", str(path)))
    return refs


def test_transformers_teacher_on_cuda_matches_cpu(teacher_images):
    from leaf_steps.teachers import make_teacher

    pairs = [(teacher_images[0], teacher_images[1]), (teacher_images[2], teacher_images[3])]
    with make_teacher(TEACHER | {"device": "cpu", "dtype": "float32"}, PROMPTS) as cpu:
        want_points, want_pairs = cpu.score_points(teacher_images), cpu.score_pairs(pairs)
    with make_teacher(TEACHER | {"device": "cuda", "dtype": "float32"}, PROMPTS) as gpu:
        assert gpu.describe()["device"].startswith("cuda") and next(gpu.model.parameters()).is_cuda
        got_points, got_pairs = gpu.score_points(teacher_images), gpu.score_pairs(pairs)
    for want, got in zip(want_points + want_pairs, got_points + got_pairs):
        assert got.error is None
        # float32 on the GPU (TF32 may be used by cuDNN convolutions): close to the CPU values.
        np.testing.assert_allclose(got.logliks, want.logliks, atol=5e-3)
        assert got.mass == pytest.approx(want.mass, abs=5e-3)


def test_transformers_teacher_auto_dtype_on_cuda_is_half_precision_and_close(teacher_images):
    from leaf_steps.teachers import make_teacher

    with make_teacher(TEACHER | {"device": "cpu", "dtype": "float32"}, PROMPTS) as cpu:
        want = np.array([s.logliks for s in cpu.score_points(teacher_images)])
    with make_teacher(TEACHER | {"device": "auto", "dtype": "auto"}, PROMPTS) as gpu:
        info = gpu.describe()
        got = gpu.score_points(teacher_images)
    assert info["device"].startswith("cuda") and info["dtype"] in ("bfloat16", "float16")
    assert all(s.error is None and np.isfinite(s.logliks).all() for s in got)
    # Log-probabilities are computed in float32 from half-precision logits: within a few hundredths.
    np.testing.assert_allclose(np.array([s.logliks for s in got]), want, atol=0.15)
