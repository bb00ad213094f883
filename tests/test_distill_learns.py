"""Stage 1 learns the teacher's ranking, not its opposite.

A learnable synthetic task: the "quality" of an image is its brightness, and the teacher's pairs
say which of two images is brighter (t_ab = 1 when a is). Trained on the pairs alone
(``use_point: false``, so Eq 8 is the only signal), the student must rank held-out test images by
brightness. Swapping s_a and s_b anywhere between the network's outputs and Eq 8 teaches the
reverse order, and the SRCC turns strongly negative: this test fails on that one-line slip, which
the shape-and-finiteness tests of test_student.py cannot see. A few seconds on one core.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from scipy import stats

from leaf_steps import distill
from leaf_steps.core.io import read_provenance

SIDE = 24
STUDENT = {"model": "resnet10t", "pretrained": False, "resize": SIDE, "crop": 20, "num_workers": 0, "amp": False}
DISTILL = {
    "epochs": 2,
    "batch_size": 8,
    "pair_batch_size": 12,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "lambda_dis": 1.0,
    "holdout_fraction": 0.2,
    "seed": 0,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def brightness_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("brightness")
    rng = np.random.default_rng(11)
    n_train, n_test = 40, 16
    level = np.concatenate([rng.permutation(np.linspace(30, 220, n_train)), np.linspace(35, 215, n_test)])
    rows = []
    for i, b in enumerate(level):
        texture = rng.normal(0, 12, (SIDE, SIDE, 3))  # content that says nothing about quality
        pixels = np.clip(b + texture, 0, 255).astype(np.uint8)
        path = root / f"im{i:02d}.png"
        Image.fromarray(pixels).save(path)
        rows.append(
            {
                "image_id": f"im{i:02d}",
                "path": str(path),
                "mos": None,
                "split": "train" if i < n_train else "test",
                "width": SIDE,
                "height": SIDE,
            }
        )
    manifest = pl.DataFrame(
        rows,
        schema={
            "image_id": pl.String,
            "path": pl.String,
            "mos": pl.Float64,
            "split": pl.String,
            "width": pl.Int32,
            "height": pl.Int32,
        },
    )
    manifest.write_parquet(root / "manifest.parquet")
    bright = dict(zip(manifest["image_id"], level))
    train = [r["image_id"] for r in rows if r["split"] == "train"]
    a = rng.choice(train, 160)
    b = np.array([rng.choice([t for t in train if t != x]) for x in a])
    pairs = pl.DataFrame(
        {
            "a_id": a,
            "b_id": b,
            "t_ab": [int(bright[x] > bright[y]) for x, y in zip(a, b)],
            "confidence": np.full(len(a), 1.0),
        }
    )
    pairs.write_parquet(root / "pairs.parquet")
    # Points are required by the CLI; with use_point false they are not trained on.
    pl.DataFrame({"image_id": train, "teacher_score": np.full(len(train), 3.0)}).write_parquet(root / "points.parquet")
    return root, bright


def train_on_pairs(root, out):
    out.mkdir()
    settings = {
        "student": STUDENT,
        "distill": DISTILL,
        "use_point": False,
        "use_pair": True,
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
            "--pairs",
            str(root / "pairs.parquet"),
            "--out-model",
            str(out / "m.safetensors"),
            "--out-losses",
            str(out / "losses.parquet"),
            "--out-predictions",
            str(out / "preds.parquet"),
            "--settings",
            json.dumps(settings),
        ]
    )
    return out


def test_pair_only_student_ranks_test_images_like_the_teacher(brightness_task, tmp_path):
    root, bright = brightness_task
    out = train_on_pairs(root, tmp_path / "run")
    preds = pl.read_parquet(out / "preds.parquet")
    srcc = stats.spearmanr(preds["prediction"], [bright[i] for i in preds["image_id"]]).statistic
    assert srcc > 0.8, srcc  # the teacher's order, on images never trained on
    losses = pl.read_parquet(out / "losses.parquet")
    # Eq 8 on held-out pairs falls below chance (log 2 with unit weights) once the order is learnt.
    assert losses.filter("selected")["val_rank"][0] < np.log(2) * 0.8
    counts = read_provenance(out / "losses.parquet")["counts"]
    assert counts["train_pairs"] > 0 and counts["val_pairs"] > 0
