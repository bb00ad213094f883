"""Oracles for the scale handling of calibration (leaf_steps.calibrate), on real PNGs and a real timm student.

* The affine initialisation of the output layer is the least-squares line of standardised MOS on the
  stage-1 outputs over the calib_train images: its scale and shift equal the closed-form fit
  a = cov(s, z) / var(s), c = mean(z) - a mean(s), and the model then outputs a * s + c.
* End to end: a calibration whose fine-tuning cannot move the weights (lr 1e-12, no weight decay, a
  student without batch-norm statistics) must predict, in MOS units, exactly the least-squares line
  of MOS on the stage-1 outputs fitted on calib_train: standardise, fit, and fold back (scale std,
  shift mean) compose to that line. Skipping the initialisation, or folding (mean, std) the other
  way round, gives other numbers.

The student is timm's convnext_atto with random weights (LayerNorm only: train-mode forward passes
change nothing), at crop 32.
"""

import json

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from scipy import stats

from leaf_steps import calibrate
from leaf_steps.core.io import read_provenance
from leaf_steps.training.data import image_rows, read_manifest
from leaf_steps.training.models import build_model, load_checkpoint, output_layer, save_checkpoint
from leaf_steps.training.scoring import predict

MODEL = "convnext_atto"
STUDENT = {"model": MODEL, "pretrained": False, "resize": 40, "crop": 32, "num_workers": 0, "amp": False}
# Fine-tuning that cannot change a float32 weight: every AdamW step is ~1e-12, far below one ulp.
FROZEN = {"epochs": 1, "batch_size": 4, "lr": 1e-12, "weight_decay": 0.0, "lambda_cal": 1.0}
TRAIN_IDS = [f"t{i}" for i in range(8)]
VAL_IDS = [f"v{i}" for i in range(4)]
TEST_IDS = [f"x{i}" for i in range(4)]


def closed_form_line(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares y ~ a * s + c from the normal equations (no numpy fitting routine)."""
    sc = s - s.mean()
    a = float((sc * (y - y.mean())).sum() / (sc * sc).sum())
    return a, float(y.mean() - a * s.mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib_oracle")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:40] / 39.0
    manifest = []
    for k, image_id in enumerate(TRAIN_IDS + VAL_IDS + TEST_IDS):
        img = np.stack([xx * rng.uniform(0, 1), yy * rng.uniform(0, 1), np.full_like(xx, k / 16)], -1) * 255
        img = np.clip(img + rng.normal(0, 20 + 4 * k, img.shape), 0, 255).astype(np.uint8)
        path = root / f"{image_id}.png"
        Image.fromarray(img).save(path)
        manifest.append(
            {
                "image_id": image_id,
                "path": str(path),
                "mos": None,
                "split": "test" if image_id in TEST_IDS else "train",
                "width": 40,
                "height": 40,
            }
        )
    pl.DataFrame(manifest).write_parquet(root / "manifest.parquet")
    mos = {i: float(m) for i, m in zip(TRAIN_IDS + VAL_IDS, rng.uniform(20, 90, 12), strict=True)}
    pl.DataFrame(
        [{"image_id": i, "role": "calib_train" if i in TRAIN_IDS else "calib_val", "mos": m} for i, m in mos.items()]
    ).write_parquet(root / "subset.parquet")
    torch.manual_seed(0)
    stage1 = build_model(MODEL, pretrained=False)
    save_checkpoint(
        stage1,
        root / "stage1.safetensors",
        model_name=MODEL,
        stage="distill",
        settings={},
        output_units="teacher_score",
        extra={"epoch": "3", "selected_epoch": "3"},
    )
    return {
        "root": root,
        "manifest": root / "manifest.parquet",
        "subset": root / "subset.parquet",
        "stage1": root / "stage1.safetensors",
        "mos": mos,
    }


def outputs(model, data, ids) -> np.ndarray:
    manifest = read_manifest(data["manifest"])
    return predict(model, image_rows(manifest, data["manifest"], ids), resize=40, crop=32)


def settings(calibration=FROZEN):
    return {
        "student": dict(STUDENT),
        "calibration": dict(calibration),
        "student_model": None,
        "device": "cpu",
        "seed": 0,
    }


def test_affine_init_is_the_closed_form_least_squares_fit(data):
    model, _ = load_checkpoint(data["stage1"])
    s = outputs(model, data, TRAIN_IDS)
    assert np.ptp(s) > 1e-3  # the stage-1 outputs differ between images: there is a line to fit
    y = np.array([data["mos"][i] for i in TRAIN_IDS])
    z = (y - y.mean()) / y.std()
    manifest = read_manifest(data["manifest"])
    rows = image_rows(manifest, data["manifest"], TRAIN_IDS)
    info = calibrate.affine_init(model, rows, z, calibrate.CalibrationSettings.parse(settings()), "cpu", None)
    a, c = closed_form_line(s, z)
    assert info["scale"] == pytest.approx(a, rel=1e-9)
    assert info["shift"] == pytest.approx(c, rel=1e-9, abs=1e-12)
    assert info["stage1_srcc_train"] == pytest.approx(stats.spearmanr(s, z).statistic, abs=1e-12)
    # The head now outputs the fitted line: standardised MOS predicted from the stage-1 outputs.
    after = outputs(model, data, TRAIN_IDS)
    np.testing.assert_allclose(after, a * s + c, rtol=0, atol=1e-4)
    # Residuals of a least-squares line with intercept: zero mean, orthogonal to s.
    assert abs((z - after).mean()) < 1e-4 and abs(((z - after) * (s - s.mean())).sum()) < 1e-4


def test_frozen_calibration_predicts_the_least_squares_line_of_mos_on_stage1(data, tmp_path):
    stage1, _ = load_checkpoint(data["stage1"])
    s_train, s_val, s_test = (outputs(stage1, data, ids) for ids in (TRAIN_IDS, VAL_IDS, TEST_IDS))
    y_train = np.array([data["mos"][i] for i in TRAIN_IDS])
    y_val = np.array([data["mos"][i] for i in VAL_IDS])
    a, c = closed_form_line(s_train, y_train)  # in MOS units, straight on the stage-1 outputs

    out = {
        k: tmp_path / f"{k}.{ext}" for k, ext in (("model", "safetensors"), ("losses", "parquet"), ("preds", "parquet"))
    }
    calibrate.main(
        [
            "--manifest",
            str(data["manifest"]),
            "--subset",
            str(data["subset"]),
            "--init",
            str(data["stage1"]),
            "--out-model",
            str(out["model"]),
            "--out-losses",
            str(out["losses"]),
            "--out-predictions",
            str(out["preds"]),
            "--settings",
            json.dumps(settings()),
        ]
    )

    preds = pl.read_parquet(out["preds"])
    assert preds["image_id"].to_list() == TEST_IDS
    np.testing.assert_allclose(preds["prediction"].to_numpy(), a * s_test + c, rtol=0, atol=1e-3)
    # The saved checkpoint is in MOS units too.
    model, meta = load_checkpoint(out["model"])
    assert meta["output_units"] == "mos"
    np.testing.assert_allclose(outputs(model, data, TEST_IDS), a * s_test + c, rtol=0, atol=1e-3)
    # Epoch 0 (the initialised model) is evaluated on calib_val in MOS units: RMSE of the same line there.
    epoch0 = pl.read_parquet(out["losses"]).filter(pl.col("epoch") == 0).row(0, named=True)
    assert epoch0["val_rmse"] == pytest.approx(float(np.sqrt(np.mean((a * s_val + c - y_val) ** 2))), abs=1e-3)
    counts = read_provenance(out["preds"])["counts"]
    assert counts["mos_mean"] == pytest.approx(y_train.mean(), rel=1e-12)
    assert counts["mos_std"] == pytest.approx(y_train.std(), rel=1e-12)  # population std, as documented
    assert counts["affine_init"]["scale"] == pytest.approx(a / y_train.std(), rel=1e-6)


def test_a_stage1_model_with_constant_outputs_is_left_as_it_is(data):
    model, _ = load_checkpoint(data["stage1"])
    with torch.no_grad():
        output_layer(model).weight.zero_()  # every image now scores the bias: no line to fit
    before = {k: v.clone() for k, v in model.state_dict().items()}
    manifest = read_manifest(data["manifest"])
    rows = image_rows(manifest, data["manifest"], TRAIN_IDS)
    z = np.linspace(-1.5, 1.5, len(TRAIN_IDS))
    assert calibrate.affine_init(model, rows, z, calibrate.CalibrationSettings.parse(settings()), "cpu", None) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
