"""`leaf predict`, the exports and the shared eval transform, on real small photos.

The photos are scikit-image's bundled samples, cut to a few sizes and aspect ratios and saved as
JPEG (one heavily compressed) and PNG, next to broken files users do have: text named .jpg, a
truncated PNG, an animated GIF, an empty file. The student is a random-init resnet10t at crop 32
saved by the stages' own checkpoint writer (seconds on one core); every check is about scoring
the same pixels the same way, not about quality.

Tolerances. Between two torch runs of the same checkpoint on the same device scores agree to
1e-5 (only batch composition differs). timm rebuilt from the export folder, with timm's own
transform, agrees to 1e-5 too (the same float32 operations). ONNX through onnxruntime agrees to
1e-4 x the spread (std) of the scores: its fused float32 kernels round differently, nothing else
may differ.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data as skdata

from leaf_steps import export_model
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.core.io import read_provenance
from leaf_steps.datasets.common import list_images
from leaf_steps.images import load_rgb
from leaf_steps.inference import batches, inputs
from leaf_steps.inference.models import file_sha256
from leaf_steps.inference.resume import partial_dir
from leaf_steps.tools import predict
from leaf_steps.training import scoring
from leaf_steps.training.data import ImageRow
from leaf_steps.training.models import build_model, load_checkpoint, save_checkpoint
from leaf_steps.training.scoring import predict as scoring_predict
from leaf_steps.training.transforms import EvalTransform, crop_pct_for, normalize

ROOT = Path(__file__).resolve().parents[1]
STUDENT = {"model": "resnet10t", "pretrained": False, "resize": 40, "crop": 32, "num_workers": 0, "amp": False}
ONNX_TOLERANCE = 1e-4  # x the std of the scores
TORCH_TOLERANCE = 1e-5  # absolute


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _photo(name: str, size: tuple[int, int]) -> Image.Image:
    arr = getattr(skdata, name)()
    img = Image.fromarray(arr).convert("RGB")
    return img.resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of good photos (one in a subfolder) and four broken files."""
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    _photo("astronaut", (80, 60)).save(d / "astronaut.jpg", quality=92)
    _photo("chelsea", (60, 90)).save(d / "chelsea.png")
    _photo("coffee", (96, 64)).save(d / "coffee_q10.jpg", quality=10)
    _photo("rocket", (70, 70)).filter(ImageFilter.GaussianBlur(2)).save(d / "sub" / "rocket_blur.png")
    noisy = np.asarray(_photo("astronaut", (64, 64)), dtype=np.float64)
    noisy += np.random.default_rng(0).normal(0, 25, noisy.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(d / "sub" / "astronaut_noise.png")
    Image.fromarray(skdata.camera()).resize((72, 48)).save(d / "camera_gray.png")
    # broken files
    (d / "notes.jpg").write_text("this is not an image\n")
    good = (d / "chelsea.png").read_bytes()
    (d / "cut.png").write_bytes(good[: len(good) // 3])
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    (d / "empty.png").write_bytes(b"")
    return d


GOOD = [
    "astronaut.jpg",
    "camera_gray.png",
    "chelsea.png",
    "coffee_q10.jpg",
    "sub/astronaut_noise.png",
    "sub/rocket_blur.png",
]
BROKEN = {
    "anim.gif": "GIF image with 2 frames",
    "cut.png": "cannot decode image",
    "empty.png": "not a readable image",
    "notes.jpg": "not a readable image",
}


def _random_student() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(STUDENT["model"], pretrained=False)
    with torch.no_grad():  # statistics as after training, so eval-mode outputs spread out
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        model.get_classifier().weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    settings = {"student": STUDENT, "calibration": {"epochs": 3}, "seed": 0}
    save_checkpoint(
        _random_student(),
        path,
        model_name=STUDENT["model"],
        stage="calibrate",
        settings=settings,
        output_units="mos",
        extra={"selected_epoch": "2"},
    )
    return path


def reference_scores(paths: list[Path]) -> np.ndarray:
    """Scores from outside LEAF's code: torchvision's own Resize / CenterCrop / ToTensor / Normalize
    on the decoded image, the model in plain NCHW float32."""
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(STUDENT["resize"], interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(STUDENT["crop"]),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    with torch.no_grad():
        return _random_student()(torch.stack([tf(load_rgb(p)) for p in paths])).reshape(-1).double().numpy()


def run_predict(model, args, out: Path, *extra: str) -> pl.DataFrame:
    predict.main(["--model", str(model), *map(str, args), "--out", str(out), "--device", "cpu", *extra])
    return pl.read_parquet(out) if out.suffix == ".parquet" else pl.read_csv(out)


@pytest.fixture(scope="module")
def folder_scores(photos, checkpoint, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("pred") / "scores.parquet"
    return run_predict(checkpoint, [photos, photos / "missing.png"], out, "--workers", "1", "--batch-size", "4")


def test_predict_folder_with_broken_files(photos, checkpoint, folder_scores):
    df = folder_scores
    assert df.schema == predict.OUTPUT_SCHEMA
    # one row per file, folder scan order (sorted, recursive), then the missing argument
    expected = [str(p) for p in list_images(photos)] + [str(photos / "missing.png")]
    assert df["path"].to_list() == expected
    rows = {Path(p).relative_to(photos).as_posix(): r for p, r in zip(df["path"], df.iter_rows(named=True))}
    for name in GOOD:
        assert rows[name]["error"] is None and np.isfinite(rows[name]["score"]), name
    for name, reason in BROKEN.items():
        assert rows[name]["score"] is None
        assert name in rows[name]["error"] and reason in rows[name]["error"], rows[name]["error"]
    assert rows["missing.png"]["error"].endswith("missing.png: image file not found")
    assert set(df["units"]) == {"mos"}
    assert df["model_id"].unique().to_list() == [f"resnet10t-calibrate-{file_sha256(checkpoint)}"]
    good = df.filter(pl.col("error").is_null())
    np.testing.assert_allclose(
        good["score"].to_numpy(), reference_scores([photos / n for n in GOOD]), atol=TORCH_TOLERANCE, rtol=0
    )


def test_predict_provenance_and_partial_cleanup(photos, checkpoint, tmp_path):
    out = tmp_path / "s.parquet"
    run_predict(checkpoint, [photos], out, "--workers", "0")
    prov = read_provenance(out)
    assert prov["step"] == "predict" and prov["runtime"] == "torch" and prov["units"] == "mos"
    assert prov["transform"]["resize"] == 40 and prov["transform"]["crop"] == 32
    assert prov["counts"]["scored"] == len(GOOD) and prov["counts"]["errors"] == len(BROKEN)
    assert not partial_dir(out).exists()


def test_predict_scores_what_training_evaluates(photos, checkpoint, folder_scores):
    """`leaf predict` and the stages' own evaluation (scoring_predict on manifest rows) give the same scores."""
    model, _ = load_checkpoint(checkpoint)
    rows = [ImageRow(n, photos / n, i, "test") for i, n in enumerate(GOOD)]
    trained_view = scoring_predict(model, rows, resize=40, crop=32, batch_size=3)
    good = folder_scores.filter(pl.col("error").is_null())
    np.testing.assert_allclose(good["score"].to_numpy(), trained_view, atol=TORCH_TOLERANCE, rtol=0)


def test_large_jpegs_decode_the_same_reduced_way_in_training_prediction_and_the_card(tmp_path, checkpoint):
    """A JPEG much larger than the input is decoded at a reduced DCT scale: the same pixels in the
    stages' evaluation, in leaf predict, and in the model card's timm recipe."""
    from timm.data import create_transform

    path = tmp_path / "big.jpg"
    _photo("astronaut", (400, 300)).save(path, quality=90)
    transform = EvalTransform(40, 32)
    reduced = transform.load(path)
    assert reduced.size == (100, 75)  # 1/4 scale: the smallest with both sides >= 40
    full = load_rgb(path).resize(reduced.size, Image.BILINEAR)
    assert np.abs(np.asarray(reduced, float) - np.asarray(full, float)).mean() < 3  # a fine decode, not a crude one

    image = Image.open(path)  # the model card's recipe
    image.draft("RGB", (40, 40))
    recipe = create_transform(**transform.timm_data_config(), is_training=False)(image.convert("RGB"))
    assert torch.equal(recipe, normalize(transform(reduced).unsqueeze(0))[0])

    model, _ = load_checkpoint(checkpoint)
    trained_view = scoring_predict(model, [ImageRow("big", path, 0, "test")], resize=40, crop=32)
    df = run_predict(checkpoint, [path], tmp_path / "s.parquet", "--workers", "0")
    assert df["score"][0] == pytest.approx(trained_view[0], abs=TORCH_TOLERANCE)


def test_lists_manifests_and_duplicates(photos, checkpoint, folder_scores, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "some.csv").write_text("path,comment\n" + "".join(f"{photos / n},x\n" for n in GOOD[:2]))
    rel = os.path.relpath(photos / GOOD[2], lists)
    (lists / "more.txt").write_text(f"# my picks\n\n{rel}\n{photos / GOOD[0]}\n")  # relative to the list; a duplicate
    pl.DataFrame({"image_id": ["a", "b"], "path": [str(photos / GOOD[3]), str(photos / "notes.jpg")]}).write_parquet(
        lists / "manifest.parquet"
    )
    out = tmp_path / "scores.csv"
    df = run_predict(
        checkpoint,
        [lists / "some.csv", lists / "more.txt", lists / "manifest.parquet", photos / GOOD[4]],
        out,
        "--workers",
        "0",
    )
    expected_paths = [
        str(photos / GOOD[0]),
        str(photos / GOOD[1]),
        str(lists / rel),
        str(photos / GOOD[3]),
        str(photos / "notes.jpg"),
        str(photos / GOOD[4]),
    ]
    assert df["path"].to_list() == expected_paths  # argument order, then list order; the duplicate once
    by_name = {Path(p).name: s for p, s in zip(folder_scores["path"], folder_scores["score"])}
    got = {Path(p).name: s for p, s in zip(df["path"], df["score"])}
    for name in [Path(g).name for g in GOOD[:5]]:
        assert got[name] == pytest.approx(by_name[name], abs=TORCH_TOLERANCE)
    assert got["notes.jpg"] is None
    assert "notes.jpg: not a readable image" in df.filter(pl.col("score").is_null())["error"][0]


def test_bad_arguments_are_clear(photos, checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--out .*scores.txt: expected a .parquet or .csv"):
        run_predict(checkpoint, [photos], tmp_path / "scores.txt")
    with pytest.raises(InputError, match="nope.safetensors: model not found"):
        run_predict(tmp_path / "nope.safetensors", [photos], tmp_path / "s.parquet")
    (tmp_path / "list.csv").write_text("name,score\na.jpg,1\n")
    with pytest.raises(InputError, match=r"list.csv: no column named one of \['path'"):
        inputs.collect([str(tmp_path / "list.csv")])
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="weights.pt: unknown model format"):
        run_predict(tmp_path / "weights.pt", [photos], tmp_path / "s.parquet")


@pytest.mark.parametrize("resize, crop", [(256, 224), (64, 48), (96, 96), (233, 200), (100, 33), (47, 31)])
@pytest.mark.parametrize("size", [(300, 200), (150, 333), (47, 47)])
def test_timm_transform_reproduces_the_eval_transform(resize, crop, size):
    """timm's eval transform built from the exported data config gives the very same tensor."""
    from timm.data import create_transform

    cfg = EvalTransform(resize, crop).timm_data_config()
    assert int(crop / cfg["crop_pct"]) == resize  # timm's scale size, floor(crop / crop_pct)
    image = _photo("coffee", size)
    ours = normalize(EvalTransform(resize, crop)(image).unsqueeze(0))[0]
    timms = create_transform(**cfg, is_training=False)(image)
    assert torch.equal(ours, timms)
    assert EvalTransform.from_timm_data_config(cfg) == EvalTransform(resize, crop)


def test_crop_pct_gives_timms_scale_size_exactly():
    for crop in range(16, 400, 7):
        for resize in range(crop, crop + 120, 3):
            assert math.floor(crop / crop_pct_for(crop, resize)) == resize, (crop, resize)


# --------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def exported(photos, checkpoint, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export_run")
    names = GOOD
    pl.DataFrame(
        {
            "image_id": names,
            "path": [str(photos / n) for n in names],
            "mos": [50.0] * len(names),
            "split": ["test"] * len(names),
            "width": [0] * len(names),
            "height": [0] * len(names),
        }
    ).write_parquet(d / "manifest.parquet")
    # the run's evaluation table: other methods and ratios are left off the card
    pl.DataFrame(
        [
            {"method": m, "ratio": r, "seed": seed, "n": 6, "srcc": srcc, "plcc": srcc + 0.02, "krcc": 0.6, "rmse": 9.5}
            for m, r, seed, srcc in (
                ("leaf", 0.3, 0, 0.81),
                ("leaf", 0.3, 1, 0.79),
                ("leaf", 0.1, 0, 0.11),
                ("cft_only", 0.3, 0, 0.22),
            )
        ]
    ).write_parquet(d / "runs.parquet")
    pl.DataFrame(
        {"image_id": ["x", "y", "z"], "role": ["calib_train", "calib_train", "calib_val"], "mos": [1.0, 2.0, 3.0]}
    ).write_parquet(d / "subset.parquet")
    settings = {
        "run_name": "unit",
        "variant": "leaf",
        "ratio": 0.3,
        "seed": 0,
        "onnx": True,
        "teacher": {"name": "internvl", "backend": "vllm", "model": "OpenGVLab/InternVL3_5-8B"},
        "dataset": "folder",
        "student": STUDENT,
        "distill": {
            "epochs": 10,
            "batch_size": 32,
            "pair_batch_size": 32,
            "lr": 1e-4,
            "weight_decay": 0.05,
            "lambda_dis": 0.5,
            "holdout_fraction": 0.1,
            "seed": 0,
        },
        "calibration": {
            "val_fraction": 0.2,
            "epochs": 20,
            "batch_size": 16,
            "lr": 5e-5,
            "weight_decay": 0.05,
            "lambda_cal": 1.0,
        },
        "tau": 0.1,
    }
    out = d / "export"
    export_model.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--manifest",
            str(d / "manifest.parquet"),
            "--runs",
            str(d / "runs.parquet"),
            "--subset",
            str(d / "subset.parquet"),
            "--out-dir",
            str(out),
            "--settings",
            json.dumps(settings),
        ]
    )
    return out


def test_export_folder_layout_and_card(exported, checkpoint):
    assert {p.name for p in exported.iterdir()} == {
        "config.json",
        "model.safetensors",
        "model.onnx",
        "README.md",
        "export_check.json",
    }
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architecture"] == "resnet10t" and cfg["num_classes"] == 1
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 32, 32] and pcfg["crop_mode"] == "center"
    assert pcfg["interpolation"] == "bilinear" and pcfg["crop_pct"] == crop_pct_for(32, 40)
    assert "tag" not in pcfg and "hf_hub_id" not in pcfg  # nothing claims ImageNet weights
    assert cfg["leaf"]["units"] == "mos" and cfg["leaf"]["model_id"].startswith("resnet10t-calibrate-")
    card = (exported / "README.md").read_text()
    for needle in (
        "resnet10t",
        "OpenGVLab/InternVL3_5-8B",
        ("0.3 of the training images' MOS (2 images to fine-tune, 1 to pick the epoch), seed 0"),
        "| 0 (this model) | 6 | 0.810 | 0.830 |",
        "| 1 | 6 | 0.790 |",
        "0.800 ± 0.014",
        "shorter side to 40 px",
        'image.draft("RGB", (40, 40))',
        "center crop 32",
        "MOS (the dataset's rating scale)",
        'timm.create_model("local-dir:',
        "leaf predict --model",
    ):
        assert needle in card, needle
    assert "0.110" not in card and "0.220" not in card  # other ratios and methods of the run stay off the card


def test_timm_folder_reproduces_predictions_with_timm_alone(exported, photos, folder_scores):
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    tf = create_transform(**resolve_data_config({}, model=model), is_training=False)
    with torch.no_grad():
        timm_alone = model(torch.stack([tf(Image.open(photos / n).convert("RGB")) for n in GOOD])).reshape(-1)
    good = folder_scores.filter(pl.col("error").is_null())
    np.testing.assert_allclose(timm_alone.double().numpy(), good["score"].to_numpy(), atol=TORCH_TOLERANCE, rtol=0)


def test_onnx_matches_pytorch_on_real_images_with_a_dynamic_batch(exported, photos, folder_scores):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image" and isinstance(session.get_inputs()[0].shape[0], str)
    tf = EvalTransform(40, 32)
    x = normalize(torch.stack([tf(load_rgb(photos / n)) for n in GOOD])).numpy()
    full = session.run(None, {"image": x})[0].reshape(-1)
    one = np.array([session.run(None, {"image": x[i : i + 1]})[0].item() for i in range(len(GOOD))])
    torch_scores = folder_scores.filter(pl.col("error").is_null())["score"].to_numpy()
    tol = ONNX_TOLERANCE * torch_scores.std()
    np.testing.assert_allclose(full, torch_scores, atol=tol, rtol=0)
    np.testing.assert_allclose(one, torch_scores, atol=tol, rtol=0)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["leaf"])
    assert meta["transform"]["resize"] == 40 and meta["units"] == "mos"


@pytest.mark.parametrize("form", ["folder", "onnx"])
def test_leaf_predict_runs_both_exports(exported, photos, folder_scores, tmp_path, form):
    model = exported if form == "folder" else exported / "model.onnx"
    df = run_predict(model, [photos], tmp_path / "s.parquet", "--workers", "0")
    ref = folder_scores.filter(~pl.col("path").str.ends_with("missing.png"))
    assert df["path"].to_list() == ref["path"].to_list()
    assert df["model_id"].unique().to_list() == ref["model_id"].unique().to_list()  # one model, one id
    assert df["error"].is_null().to_list() == ref["error"].is_null().to_list()
    tol = TORCH_TOLERANCE if form == "folder" else ONNX_TOLERANCE * ref["score"].drop_nulls().std()
    np.testing.assert_allclose(
        df["score"].drop_nulls().to_numpy(), ref["score"].drop_nulls().to_numpy(), atol=tol, rtol=0
    )
    assert read_provenance(tmp_path / "s.parquet")["runtime"] == ("torch" if form == "folder" else "onnxruntime")


# --------------------------------------------------------------------------- resume

SLOW_PREDICT = """
import sys, time
from leaf_steps.training import scoring
call = scoring.TorchScorer.__call__
def slow(self, images):
    time.sleep(0.4)
    return call(self, images)
scoring.TorchScorer.__call__ = slow
from leaf_steps.tools import predict
predict.main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def many(photos, tmp_path_factory) -> Path:
    """24 photos (copies with different bytes), and one broken file."""
    d = tmp_path_factory.mktemp("many")
    for k in range(24):
        img = _photo(["astronaut", "coffee", "chelsea"][k % 3], (48 + k, 40))
        img.save(d / f"img{k:02d}.png")
    (d / "zz_broken.jpg").write_text("no")
    return d


def test_killed_run_resumes_without_redoing_finished_images(many, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"
    args = [
        "--model",
        str(checkpoint),
        str(many),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--flush-every",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREDICT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts_dir = partial_dir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts = list(parts_dir.glob("part-*.parquet"))
    assert 3 <= len(parts) < 12 and not out.exists(), "the run was not killed midway"
    finished = sum(pl.read_parquet(p).height for p in parts)

    scored = []
    call = scoring.TorchScorer.__call__

    def counting(self, images):
        scored.append(images.shape[0])
        return call(self, images)

    monkeypatch.setattr(scoring.TorchScorer, "__call__", counting)
    predict.main(args[:-2])
    assert sum(scored) == 24 - finished  # only what the killed run had not saved
    resumed = pl.read_parquet(out)
    assert read_provenance(out)["counts"]["resumed"] == finished
    assert not parts_dir.exists()

    fresh = run_predict(checkpoint, [many], tmp_path / "fresh.parquet", "--workers", "0")
    assert resumed["path"].to_list() == fresh["path"].to_list()
    assert resumed["error"].to_list() == fresh["error"].to_list()
    np.testing.assert_allclose(
        resumed["score"].drop_nulls().to_numpy(), fresh["score"].drop_nulls().to_numpy(), atol=TORCH_TOLERANCE, rtol=0
    )


def test_sigterm_saves_what_is_done_and_exits_143(many, checkpoint, tmp_path):
    out = tmp_path / "scores.parquet"
    args = [
        "--model",
        str(checkpoint),
        str(many),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--flush-every",
        "1000",
    ]  # nothing is saved before the signal
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREDICT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (partial_dir(out) / "job.json").exists():
        time.sleep(0.05)
    time.sleep(1.5)  # a few batches scored, none saved yet
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    saved = sum(pl.read_parquet(p).height for p in partial_dir(out).glob("part-*.parquet"))
    assert 0 < saved < 24 and not out.exists()


def test_partial_results_of_another_model_are_not_reused(many, checkpoint, tmp_path, exported):
    out = tmp_path / "scores.parquet"
    pdir = partial_dir(out)
    pdir.mkdir()
    (pdir / "job.json").write_text(json.dumps({"model_id": "someone-else", "runtime": "torch"}))
    pl.DataFrame({"absolute": [str(many / "img00.png")], "size": [1], "mtime_ns": [1], "score": [123.0]}).write_parquet(
        pdir / "part-000000.parquet"
    )
    df = run_predict(checkpoint, [many / "img00.png"], out, "--workers", "0")
    assert df["score"][0] != 123.0 and not pdir.exists()


# --------------------------------------------------------------------------- CUDA paths

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_batches_are_pinned(photos):
    loader = batches.loader(
        [str(photos / n) for n in GOOD], EvalTransform(40, 32), batch_size=3, workers=1, device=torch.device("cuda")
    )
    batch = next(iter(loader))
    assert batch.images.is_pinned() and batch.images.dtype == torch.uint8


@pytest.mark.gpu
@cuda
def test_cuda_scorer_runs_bf16_autocast_channels_last():
    model = _random_student()
    seen = {}
    model.get_classifier().register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    scorer = scoring.TorchScorer(model, "cuda", amp=True)
    assert next(scorer.model.parameters()).is_cuda
    assert scorer.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    scores = scorer(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert seen["dtype"] == torch.bfloat16 and scores.dtype == np.float64


@pytest.mark.gpu
@cuda
def test_predict_on_cuda_matches_cpu(photos, checkpoint, folder_scores, tmp_path):
    good = folder_scores.filter(pl.col("error").is_null())["score"].to_numpy()
    fp32 = predict.main(
        [
            "--model",
            str(checkpoint),
            str(photos),
            "--out",
            str(tmp_path / "a.parquet"),
            "--device",
            "cuda",
            "--no-amp",
            "--workers",
            "2",
        ]
    )
    assert fp32 is None
    a = pl.read_parquet(tmp_path / "a.parquet").filter(pl.col("error").is_null())["score"].to_numpy()
    np.testing.assert_allclose(a, good, atol=1e-3 * good.std(), rtol=0)  # TF32/cuDNN kernels, float32
    predict.main(
        [
            "--model",
            str(checkpoint),
            str(photos),
            "--out",
            str(tmp_path / "b.parquet"),
            "--device",
            "cuda",
            "--workers",
            "2",
        ]
    )
    b = pl.read_parquet(tmp_path / "b.parquet")
    assert read_provenance(tmp_path / "b.parquet")["amp"] is True
    b = b.filter(pl.col("error").is_null())["score"].to_numpy()
    np.testing.assert_allclose(b, good, atol=0.05 * good.std(), rtol=0)  # bf16 keeps 8 bits of mantissa
