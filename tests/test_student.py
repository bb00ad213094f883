"""Stage 1 (distill) and stage 2 (calibrate) end to end on a tiny dataset of real PNGs.

The images are 48x48 gradients + noise at four blur levels; the "teacher" scores and
the MOS decrease with blur, so the artifacts are shaped like the real pipeline's.
Every run uses resnet10t at crop 32 for 2 epochs (a few seconds on one core).
"""

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image, ImageFilter

from leaf_steps import calibrate, distill
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import read_provenance
from leaf_steps.evaluation.correlation import plcc, srcc
from leaf_steps.training.data import image_rows, read_manifest
from leaf_steps.training.models import build_model, fold_affine_into_head, load_checkpoint, read_checkpoint_metadata
from leaf_steps.training.optim import batch_indices
from leaf_steps.training.scoring import predict

N_CONTENTS, LEVELS, TRAIN_CONTENTS = 10, 4, 7

STUDENT = {"model": "resnet10t", "pretrained": False, "resize": 40, "crop": 32, "num_workers": 0, "amp": False}
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


@pytest.fixture(autouse=True)
def _one_thread():
    # Bit-for-bit repeatability is promised for a fixed thread count; the suite runs on one core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    manifest, points, subset = [], [], []
    for c in range(N_CONTENTS):
        base = np.stack([xx * rng.uniform(0.3, 1), yy * rng.uniform(0.3, 1), (xx + yy) / 2], -1) * 200
        base = base + rng.normal(0, 30, (48, 48, 3))
        for level in range(LEVELS):
            image_id = f"c{c}_b{level}"
            img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
            img = img.filter(ImageFilter.GaussianBlur(radius=1.5 * level))
            path = root / f"{image_id}.png"
            img.save(path)
            split = "train" if c < TRAIN_CONTENTS else "test"
            manifest.append(
                {"image_id": image_id, "path": str(path), "mos": None, "split": split, "width": 48, "height": 48}
            )
            points.append(
                {
                    "image_id": image_id,
                    "teacher_score": float(np.clip(5 - level + rng.normal(0, 0.2), 1, 5)),
                    "error": None,
                }
            )
    # two teacher failures (null score + error message) that distill must skip and count
    points[1] = {"image_id": points[1]["image_id"], "teacher_score": None, "error": "timeout"}
    points[6] = {"image_id": points[6]["image_id"], "teacher_score": None, "error": "bad json"}
    score = {p["image_id"]: p["teacher_score"] for p in points}
    train_ids = [m["image_id"] for m in manifest if m["split"] == "train"]
    pairs = []
    for _ in range(len(train_ids)):
        a, b = rng.choice(train_ids, 2, replace=False)
        sa, sb = score[a] or 3.0, score[b] or 3.0
        pairs.append({"a_id": a, "b_id": b, "t_ab": int(sa >= sb), "confidence": float(rng.uniform(0.2, 1.0))})
    pairs.append({"a_id": train_ids[0], "b_id": manifest[-1]["image_id"], "t_ab": 1, "confidence": 0.9})  # test image
    for i, image_id in enumerate(rng.permutation(train_ids)[:16]):
        level = int(image_id[-1])
        subset.append(
            {
                "image_id": str(image_id),
                "role": "calib_train" if i < 10 else "calib_val",
                "mos": float(100 - 22 * level + rng.normal(0, 3)),
            }
        )

    def write(name, rows, schema):
        path = root / name
        pl.DataFrame(rows, schema=schema).write_parquet(path)
        return path

    return {
        "root": root,
        "manifest": write(
            "manifest.parquet",
            manifest,
            {
                "image_id": pl.String,
                "path": pl.String,
                "mos": pl.Float64,
                "split": pl.String,
                "width": pl.Int32,
                "height": pl.Int32,
            },
        ),
        "points": write(
            "points.parquet", points, {"image_id": pl.String, "teacher_score": pl.Float64, "error": pl.String}
        ),
        "pairs": write(
            "pairs.parquet", pairs, {"a_id": pl.String, "b_id": pl.String, "t_ab": pl.Int8, "confidence": pl.Float64}
        ),
        "subset": write("subset.parquet", subset, {"image_id": pl.String, "role": pl.String, "mos": pl.Float64}),
        "test_ids": [m["image_id"] for m in manifest if m["split"] == "test"],
        "manifest_rows": manifest,
    }


def distill_settings(**over):
    s = {
        "student": dict(STUDENT),
        "distill": dict(DISTILL),
        "use_point": True,
        "use_pair": True,
        "use_confidence": True,
        "student_model": None,
        "device": "cpu",
        "seed": 0,
    }
    s.update(over)
    return s


def run_distill(data, out, settings=None, manifest=None, with_pairs=True):
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        k: out / f"{k}.{ext}" for k, ext in (("model", "safetensors"), ("losses", "parquet"), ("preds", "parquet"))
    }
    distill.main(
        [
            "--manifest",
            str(manifest or data["manifest"]),
            "--points",
            str(data["points"]),
            *(["--pairs", str(data["pairs"])] if with_pairs else []),
            "--out-model",
            str(paths["model"]),
            "--out-losses",
            str(paths["losses"]),
            "--out-predictions",
            str(paths["preds"]),
            "--settings",
            json.dumps(settings or distill_settings()),
        ]
    )
    return paths


def run_calibrate(data, out, init=None, seed=0):
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        k: out / f"{k}.{ext}" for k, ext in (("model", "safetensors"), ("losses", "parquet"), ("preds", "parquet"))
    }
    settings = {
        "student": dict(STUDENT),
        "calibration": dict(CALIB),
        "student_model": None,
        "device": "cpu",
        "seed": seed,
    }
    argv = [
        "--manifest",
        str(data["manifest"]),
        "--subset",
        str(data["subset"]),
        "--out-model",
        str(paths["model"]),
        "--out-losses",
        str(paths["losses"]),
        "--out-predictions",
        str(paths["preds"]),
        "--settings",
        json.dumps(settings),
    ]
    calibrate.main(argv + (["--init", str(init)] if init else []))
    return paths


def _test_rows(data):
    manifest = read_manifest(data["manifest"])
    return image_rows(manifest, data["manifest"], data["test_ids"])


@pytest.fixture(scope="module")
def stage1(data, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test here (_one_thread): the runs it is compared with are bit-identical
    try:
        return run_distill(data, tmp_path_factory.mktemp("stage1"))
    finally:
        torch.set_num_threads(threads)  # later test files keep the machine's thread count


def test_distill_writes_documented_artifacts(data, stage1):
    losses = pl.read_parquet(stage1["losses"])
    assert losses.schema == distill.LOSS_SCHEMA
    assert losses["epoch"].to_list() == [1, 2]
    assert losses["selected"].sum() == 1
    for col in ("train_loss", "train_reg", "train_rank", "val_loss", "val_reg", "val_rank", "val_teacher_srcc"):
        assert losses[col].is_finite().all(), col
    # Eq 9 on the held-out data: val_loss = val_reg + lambda_dis * val_rank
    assert np.allclose(losses["val_loss"], losses["val_reg"] + 0.5 * losses["val_rank"])
    selected = losses.filter("selected")
    assert selected["val_loss"][0] == losses["val_loss"].min()

    preds = pl.read_parquet(stage1["preds"])
    assert preds.schema == {"image_id": pl.String, "prediction": pl.Float64}
    assert preds["image_id"].to_list() == data["test_ids"]
    assert preds["prediction"].is_finite().all()

    prov = read_provenance(stage1["losses"])
    assert prov["step"] == "distill" and prov["selected_epoch"] == selected["epoch"][0]
    counts = prov["counts"]
    assert counts["point_errors_skipped"] == 2
    assert counts["point_non_train_dropped"] == 12  # the test-split points are never trained on
    assert counts["pair_non_train_dropped"] == 1
    assert counts["holdout_images"] == round(0.25 * 28)
    assert counts["train_pairs"] + counts["val_pairs"] == 28


def test_distill_checkpoint_reloads_and_reproduces_predictions(data, stage1):
    model, meta = load_checkpoint(stage1["model"])
    assert meta["model"] == "resnet10t" and meta["stage"] == "distill" and meta["output_units"] == "teacher_score"
    assert json.loads(meta["settings"]) == distill_settings()
    assert meta["settings_hash"] == read_provenance(stage1["losses"])["settings_hash"]
    again = predict(model, _test_rows(data), resize=40, crop=32)
    assert np.allclose(again, pl.read_parquet(stage1["preds"])["prediction"].to_numpy(), atol=1e-5)


def test_distill_same_seed_same_predictions_other_seed_differs(data, stage1, tmp_path):
    first = pl.read_parquet(stage1["preds"])["prediction"].to_numpy()
    same = pl.read_parquet(run_distill(data, tmp_path / "same")["preds"])["prediction"].to_numpy()
    assert np.array_equal(first, same)
    other = run_distill(data, tmp_path / "other", distill_settings(seed=1))
    assert not np.allclose(first, pl.read_parquet(other["preds"])["prediction"].to_numpy())


@pytest.mark.parametrize(
    "switch,off_col,on_col", [("use_pair", "train_rank", "train_reg"), ("use_point", "train_reg", "train_rank")]
)
def test_distill_ablation_switches(data, tmp_path, switch, off_col, on_col):
    paths = run_distill(data, tmp_path, distill_settings(**{switch: False}))
    losses = pl.read_parquet(paths["losses"])
    assert losses[off_col].is_null().all()
    assert losses[on_col].is_finite().all()
    # the validation loss follows the same switch
    term = "val_rank" if switch == "use_point" else "val_reg"
    factor = 0.5 if switch == "use_point" else 1.0
    assert np.allclose(losses["val_loss"], factor * losses[term])
    assert pl.read_parquet(paths["preds"])["prediction"].is_finite().all()


def test_distill_point_only_runs_without_a_pairs_file(data, tmp_path):
    with pytest.raises(ConfigError, match="use_pair is true but no --pairs"):
        run_distill(data, tmp_path / "a", with_pairs=False)
    paths = run_distill(data, tmp_path / "b", distill_settings(use_pair=False), with_pairs=False)
    losses = pl.read_parquet(paths["losses"])
    assert losses["train_rank"].is_null().all() and losses["val_rank"].is_null().all()
    assert losses["val_loss"].is_finite().all()


def test_calibrate_from_stage1(data, stage1, tmp_path):
    paths = run_calibrate(data, tmp_path, init=stage1["model"])
    losses = pl.read_parquet(paths["losses"])
    assert losses.schema == calibrate.LOSS_SCHEMA
    assert losses["epoch"].to_list() == [0, 1, 2]
    assert losses["selected"].sum() == 1
    assert losses.filter(pl.col("epoch") == 0)["train_loss"].is_null().all()
    assert losses.filter(pl.col("epoch") > 0)["train_mse"].is_finite().all()

    # Epoch 0 is the stage-1 model under an affine map: same |SRCC| on calib_val as stage 1 itself.
    subset = pl.read_parquet(data["subset"]).filter(pl.col("role") == "calib_val").sort("image_id")
    manifest = read_manifest(data["manifest"])
    stage1_model, _ = load_checkpoint(stage1["model"])
    s1 = predict(stage1_model, image_rows(manifest, data["manifest"], subset["image_id"]), resize=40, crop=32)
    expected = abs(srcc(s1, subset["mos"].to_numpy()))
    assert abs(losses["val_srcc"][0]) == pytest.approx(expected, abs=1e-9)

    # The checkpoint predicts MOS units directly and reproduces the written predictions.
    model, meta = load_checkpoint(paths["model"])
    assert meta["stage"] == "calibrate" and meta["output_units"] == "mos"
    preds = pl.read_parquet(paths["preds"])
    assert preds["image_id"].to_list() == data["test_ids"]
    assert np.allclose(predict(model, _test_rows(data), resize=40, crop=32), preds["prediction"].to_numpy(), atol=1e-4)
    train_mos = pl.read_parquet(data["subset"]).filter(pl.col("role") == "calib_train")["mos"].to_numpy()
    # standardised outputs mapped back: the predictions sit on the 0..100 MOS scale, not around 0
    assert abs(preds["prediction"].mean() - train_mos.mean()) < 2 * train_mos.std()
    prov = read_provenance(paths["preds"])
    assert prov["counts"]["mos_mean"] == pytest.approx(train_mos.mean())
    assert prov["counts"]["affine_init"]["scale"] != 0


def test_calibrate_cft_only_baseline(data, tmp_path):
    paths = run_calibrate(data, tmp_path)
    losses = pl.read_parquet(paths["losses"])
    assert losses["epoch"].to_list() == [1, 2]
    assert losses["selected"].sum() == 1
    best = losses.filter("selected")
    assert (best["val_srcc"] + best["val_plcc"])[0] == pytest.approx((losses["val_srcc"] + losses["val_plcc"]).max())
    assert pl.read_parquet(paths["preds"])["prediction"].is_finite().all()
    assert read_provenance(paths["preds"])["counts"]["init"] is None


def test_fold_affine_into_head_maps_outputs():
    torch.manual_seed(0)
    model = build_model("resnet10t", pretrained=False).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x).reshape(-1)
        fold_affine_into_head(model, -2.5, 7.0)
        after = model(x).reshape(-1)
    assert torch.allclose(after, -2.5 * before + 7.0, atol=1e-5)


def _manifest_with(data, tmp_path, image_id, new_path):
    rows = [dict(r, path=new_path if r["image_id"] == image_id else r["path"]) for r in data["manifest_rows"]]
    path = tmp_path / "manifest.parquet"
    pl.DataFrame(rows).write_parquet(path)
    row = [r["image_id"] for r in rows].index(image_id)
    return path, row


def test_missing_image_names_file_and_row(data, tmp_path):
    missing = tmp_path / "gone.png"
    manifest, row = _manifest_with(data, tmp_path, "c2_b1", str(missing))
    with pytest.raises(InputError) as err:
        run_distill(data, tmp_path / "out", manifest=manifest)
    assert str(missing) in str(err.value) and f"row {row}" in str(err.value) and "c2_b1" in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unreadable_image_names_file(data, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really an image" * 10)
    manifest, row = _manifest_with(data, tmp_path, "c3_b2", str(garbage))
    with pytest.raises(InputError) as err:
        run_distill(data, tmp_path / "out", manifest=manifest)
    assert str(garbage) in str(err.value) and f"row {row}" in str(err.value)


def test_subset_row_errors_name_the_row(data, tmp_path):
    bad = (
        pl.read_parquet(data["subset"])
        .with_row_index("i")
        .with_columns(mos=pl.when(pl.col("i") == 3).then(None).otherwise(pl.col("mos")))
        .drop("i")
    )
    path = tmp_path / "subset.parquet"
    bad.write_parquet(path)
    manifest = read_manifest(data["manifest"])
    with pytest.raises(InputError, match=r"subset.parquet: row 3 .*mos must be a finite number"):
        calibrate.load_subset(str(path), manifest)
    leak = pl.DataFrame({"image_id": [data["test_ids"][0]], "role": ["calib_train"], "mos": [50.0]})
    leak.write_parquet(path)
    with pytest.raises(InputError, match="test split"):
        calibrate.load_subset(str(path), manifest)


def test_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"settings\.distill\.lr"):
        distill.DistillSettings.parse(distill_settings(distill=dict(DISTILL, lr="fast")))
    with pytest.raises(ConfigError, match="use_point and use_pair"):
        distill.DistillSettings.parse(distill_settings(use_point=False, use_pair=False))
    with pytest.raises(ConfigError, match="student.model"):
        build_model("not_a_timm_model", pretrained=False)
    # defaults from the config schema fill keys the settings leave out
    parsed = distill.DistillSettings.parse(distill_settings(distill={"epochs": 1}))
    assert parsed.distill["lambda_dis"] == 0.5 and parsed.distill["holdout_fraction"] == 0.1


def test_pretrained_weights_unavailable_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="student.pretrained"):
        build_model("resnet10t", pretrained=True)


def test_batch_indices_never_leave_a_single_sample_batch():
    assert batch_indices(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert batch_indices(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sum(map(len, batch_indices(list(range(17)), 8))) == 17
    assert math.isnan(srcc(np.ones(4), np.arange(4)))


# --------------------------------------------------------------------------- few-shot stage-1 selection


def _labelled_manifest(data, path):
    """The fixture's manifest with a MOS on every training image (the pool MOS subsets come from)."""
    rng = np.random.default_rng(7)
    rows = [
        dict(r, mos=float(100 - 22 * int(r["image_id"][-1]) + rng.normal(0, 8))) if r["split"] == "train" else r
        for r in data["manifest_rows"]
    ]
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
    ).write_parquet(path)
    return path


def _write_subset(path, manifest, val_ids, train_ids):
    mos = dict(pl.read_parquet(manifest).select("image_id", "mos").iter_rows())
    rows = [{"image_id": i, "role": "calib_val", "mos": mos[i]} for i in val_ids]
    rows += [{"image_id": i, "role": "calib_train", "mos": mos[i]} for i in train_ids]
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def per_epoch(data, tmp_path_factory):
    """A real 3-epoch distillation that keeps every epoch (distill.selection: mos_subset)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as _one_thread: the runs compared with it are bit-identical
    try:
        return _distill_every_epoch(data, tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _distill_every_epoch(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("per_epoch")
    manifest = _labelled_manifest(data, root / "manifest.parquet")
    settings = distill_settings(distill=dict(DISTILL, epochs=3, selection="mos_subset", checkpoint_every=1))
    checkpoints = [root / f"epochs/epoch{e}.safetensors" for e in (1, 2, 3)]
    paths = {
        k: root / f"{k}.{ext}"
        for k, ext in (
            ("model", "safetensors"),
            ("losses", "parquet"),
            ("preds", "parquet"),
            ("epoch_preds", "parquet"),
        )
    }
    distill.main(
        [
            "--manifest",
            str(manifest),
            "--points",
            str(data["points"]),
            "--pairs",
            str(data["pairs"]),
            "--out-model",
            str(paths["model"]),
            "--out-losses",
            str(paths["losses"]),
            "--out-predictions",
            str(paths["preds"]),
            "--settings",
            json.dumps(settings),
            "--out-epoch-checkpoints",
            *map(str, checkpoints),
            "--out-epoch-predictions",
            str(paths["epoch_preds"]),
        ]
    )
    return {**paths, "root": root, "manifest": manifest, "checkpoints": checkpoints}


def test_distill_keeps_each_candidate_epoch_and_its_outputs_on_the_labelled_images(data, per_epoch):
    manifest = read_manifest(per_epoch["manifest"])
    pool = sorted(manifest.filter((pl.col("split") == "train") & pl.col("mos").is_not_null())["image_id"])
    assert not set(pool) & set(data["test_ids"])
    epoch_preds = pl.read_parquet(per_epoch["epoch_preds"])
    assert epoch_preds.group_by("epoch").len().sort("epoch")["len"].to_list() == [len(pool)] * 3
    rows = image_rows(manifest, per_epoch["manifest"], pool)
    for epoch, path in zip((1, 2, 3), per_epoch["checkpoints"], strict=True):
        model, meta = load_checkpoint(path)
        assert meta["epoch"] == str(epoch) and meta["stage"] == "distill_epoch"
        kept = epoch_preds.filter(pl.col("epoch") == epoch).sort("image_id")
        assert kept["image_id"].to_list() == pool
        assert np.allclose(predict(model, rows, resize=40, crop=32), kept["prediction"].to_numpy(), atol=1e-5)


def test_label_free_student_keeps_the_teacher_rule(data, per_epoch):
    losses = pl.read_parquet(per_epoch["losses"])
    teacher_epoch = losses.filter("selected")["epoch"][0]
    assert losses.filter("selected")["val_loss"][0] == losses["val_loss"].min()
    meta = read_checkpoint_metadata(per_epoch["model"])
    assert meta["epoch"] == meta["selected_epoch"] == str(teacher_epoch)
    prov = read_provenance(per_epoch["preds"])
    assert (prov["stage1_epoch"], prov["stage1_selection"]) == (teacher_epoch, "teacher")
    # The label-free predictions are those of the teacher rule's epoch checkpoint.
    model, _ = load_checkpoint(per_epoch["checkpoints"][teacher_epoch - 1])
    labelfree = pl.read_parquet(per_epoch["preds"])
    assert np.allclose(
        predict(model, _test_rows(data), resize=40, crop=32), labelfree["prediction"].to_numpy(), atol=1e-5
    )


def test_subsets_that_disagree_start_calibration_from_different_epochs(data, per_epoch, tmp_path):
    """Held-out sets of real labelled images are drawn until two of them prefer different stage-1 epochs
    (by the real epoch outputs); each calibration then starts from its own subset's epoch."""
    from leaf_steps import select_stage1
    from leaf_steps.training.selection import select_on_calib_val

    epoch_preds = pl.read_parquet(per_epoch["epoch_preds"])
    pool = sorted(epoch_preds["image_id"].unique())
    mos = dict(pl.read_parquet(per_epoch["manifest"]).select("image_id", "mos").iter_rows())
    rng = np.random.default_rng(0)
    found = {}
    for _ in range(300):
        val = sorted(rng.choice(pool, 5, replace=False).tolist())
        frame = pl.DataFrame({"image_id": val, "role": ["calib_val"] * 5, "mos": [mos[i] for i in val]})
        found.setdefault(select_on_calib_val(epoch_preds, frame, teacher_epoch=1).epoch, val)
        if len(found) >= 2:
            break
    assert len(found) >= 2, f"no two held-out sets disagree on the epoch: {found}"
    chosen = {}
    for epoch, val in list(found.items())[:2]:
        train = [i for i in pool if i not in val][:8]
        subset = _write_subset(tmp_path / f"subset{epoch}.parquet", per_epoch["manifest"], val, train)
        selection = tmp_path / f"selection{epoch}.parquet"
        select_stage1.main(
            [
                "--epoch-predictions",
                str(per_epoch["epoch_preds"]),
                "--stage1-losses",
                str(per_epoch["losses"]),
                "--subset",
                str(subset),
                "--out",
                str(selection),
            ]
        )
        # The oracle: SRCC + PLCC of each epoch's outputs on these five images, straight from scipy.
        scores = {}
        for e in (1, 2, 3):
            p = dict(epoch_preds.filter(pl.col("epoch") == e).select("image_id", "prediction").iter_rows())
            x, y = np.array([p[i] for i in val]), np.array([mos[i] for i in val])
            scores[e] = srcc(x, y) + plcc(x, y)
        assert max(scores, key=scores.get) == epoch == pl.read_parquet(selection).filter("selected")["epoch"][0]

        out = tmp_path / f"cal{epoch}"
        paths = {
            k: out / f"{k}.{ext}" for k, ext in (("model", "safetensors"), ("losses", "parquet"), ("preds", "parquet"))
        }
        settings = {
            "student": dict(STUDENT),
            "calibration": dict(CALIB),
            "student_model": None,
            "device": "cpu",
            "seed": 0,
        }
        calibrate.main(
            [
                "--manifest",
                str(per_epoch["manifest"]),
                "--subset",
                str(subset),
                "--out-model",
                str(paths["model"]),
                "--out-losses",
                str(paths["losses"]),
                "--out-predictions",
                str(paths["preds"]),
                "--settings",
                json.dumps(settings),
                "--stage1-selection",
                str(selection),
                "--stage1-checkpoints",
                *map(str, per_epoch["checkpoints"]),
                str(per_epoch["model"]),
            ]
        )
        losses = pl.read_parquet(paths["losses"])
        assert losses["stage1_epoch"].unique().to_list() == [epoch]
        assert losses["stage1_selection"].unique().to_list() == ["mos_subset"]
        prov = read_provenance(paths["preds"])
        assert (prov["stage1_epoch"], prov["stage1_selection"]) == (epoch, "mos_subset")
        # Epoch 0 is the chosen stage-1 epoch under an affine map: the same |SRCC| on calib_val.
        sel_srcc = pl.read_parquet(selection).filter("selected")["val_srcc"][0]
        assert abs(losses.filter(pl.col("epoch") == 0)["val_srcc"][0]) == pytest.approx(abs(sel_srcc), abs=1e-9)
        chosen[epoch] = (subset, selection)
    assert len(chosen) == 2

    # A selection made on another subset's held-out images is refused.
    (subset_a, _), (_, selection_b) = chosen.values()
    with pytest.raises(InputError, match="other calib_val images"):
        calibrate.main(
            [
                "--manifest",
                str(per_epoch["manifest"]),
                "--subset",
                str(subset_a),
                "--out-model",
                str(tmp_path / "x.safetensors"),
                "--out-losses",
                str(tmp_path / "x.parquet"),
                "--out-predictions",
                str(tmp_path / "y.parquet"),
                "--settings",
                json.dumps({"student": dict(STUDENT), "calibration": dict(CALIB), "device": "cpu"}),
                "--stage1-selection",
                str(selection_b),
                "--stage1-checkpoints",
                *map(str, per_epoch["checkpoints"]),
            ]
        )


def test_per_epoch_outputs_must_match_the_candidate_epochs(data, tmp_path):
    settings = distill_settings(distill=dict(DISTILL, epochs=3, checkpoint_every=2))  # candidates: 2, 3
    with pytest.raises(ConfigError, match=r"keeps epochs \[2, 3\]"):
        distill.main(
            [
                "--manifest",
                str(data["manifest"]),
                "--points",
                str(data["points"]),
                "--pairs",
                str(data["pairs"]),
                "--out-model",
                str(tmp_path / "m.safetensors"),
                "--out-losses",
                str(tmp_path / "l.parquet"),
                "--out-predictions",
                str(tmp_path / "p.parquet"),
                "--settings",
                json.dumps(settings),
                "--out-epoch-checkpoints",
                str(tmp_path / "e.safetensors"),
                "--out-epoch-predictions",
                str(tmp_path / "ep.parquet"),
            ]
        )
    assert not (tmp_path / "m.safetensors").exists()


def test_keeping_epochs_does_not_change_training(data, per_epoch, tmp_path):
    # The two selection rules must be comparable: the same seed trains the same stage 1 with or without the
    # per-epoch checkpoints and predictions (their evaluation passes draw no random numbers of the training).
    settings = distill_settings(distill=dict(DISTILL, epochs=3, selection="teacher", checkpoint_every=1))
    plain = run_distill(data, tmp_path, settings, manifest=per_epoch["manifest"])
    assert np.array_equal(
        pl.read_parquet(plain["preds"])["prediction"].to_numpy(),
        pl.read_parquet(per_epoch["preds"])["prediction"].to_numpy(),
    )
    assert pl.read_parquet(plain["losses"]).drop("seconds").equals(pl.read_parquet(per_epoch["losses"]).drop("seconds"))
