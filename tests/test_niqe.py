"""NIQE (numpy/scipy) on real bundled photos, its fit step, and the NIQE stand-in teacher."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from scipy.special import logsumexp

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import ConfigError, InputError
from leaf_steps.fit_niqe import fit_niqe
from leaf_steps.fit_niqe import main as fit_main
from leaf_steps.make_demo_dataset import DISTORTIONS, load_reference
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.niqe_model import fit_aggd, fit_pristine_model, load_model, niqe_score, save_model
from leaf_steps.teachers.teacher_math import LEVELS, expected_score, level_probabilities, pair_probability

SIZE, PATCH = 160, 32
FIT_REFS = [
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
    "retina",
    "ihc",
]
HELD_OUT = ["astronaut", "chelsea", "coffee", "camera"]  # never seen by the pristine model
LEVELS_N = 4


def _distort(img: np.ndarray, name: str, level: int) -> np.ndarray:
    d = DISTORTIONS[name]
    return d.apply(img, d.parameter(level, LEVELS_N), np.random.default_rng(level))


@pytest.fixture(scope="module")
def model():
    return fit_pristine_model([load_reference(n, SIZE) for n in FIT_REFS], patch_size=PATCH)


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    return {n: load_reference(n, SIZE) for n in HELD_OUT}


@pytest.mark.parametrize("shape", [0.7, 1.0, 2.0, 3.5])
def test_aggd_fit_recovers_gennorm_samples(shape):
    x = stats.gennorm.rvs(shape, scale=2.0, size=(3, 40_000), random_state=np.random.default_rng(0))
    alpha, left, right = fit_aggd(x)
    np.testing.assert_allclose(alpha, shape, rtol=0.08)
    # a symmetric GGD is an AGGD with both scales equal to the GGD's scale
    np.testing.assert_allclose(left, 2.0, rtol=0.06)
    np.testing.assert_allclose(right, 2.0, rtol=0.06)


def test_aggd_fit_sees_asymmetry():
    # an AGGD of shape 2: half-normals with std 1 on the left and 3 on the right, each side
    # drawn with probability proportional to its scale (1/4 left, 3/4 right)
    rng = np.random.default_rng(1)
    x = np.where(rng.random((2, 40_000)) < 0.25, -1.0, 3.0) * np.abs(rng.standard_normal((2, 40_000)))
    alpha, left, right = fit_aggd(x)
    np.testing.assert_allclose(alpha, 2.0, rtol=0.08)
    np.testing.assert_allclose(right / left, 3.0, rtol=0.05)
    np.testing.assert_allclose(left, np.sqrt(2.0), rtol=0.08)  # scale = std * sqrt(G(1/a) / G(3/a))


def test_flat_patches_have_undefined_features():
    alpha, left, right = fit_aggd(np.zeros((1, 64)))
    assert np.isnan(alpha).all() and np.isnan(left).all() and np.isnan(right).all()


@pytest.mark.parametrize("distortion", ["gaussian_blur", "gaussian_noise"])
def test_niqe_grows_with_distortion_level(model, held_out, distortion):
    table = np.array(
        [
            [niqe_score(img if lv == 0 else _distort(img, distortion, lv), model) for lv in range(LEVELS_N + 1)]
            for img in held_out.values()
        ]
    )
    assert np.isfinite(table).all()
    # every photo: the heaviest level is worse than pristine, and the mildest is worse on average
    assert np.all(table[:, -1] > table[:, 0] + 1.0), table
    assert np.all(table[:, 1:].mean(axis=1) > table[:, 0]), table
    assert np.all(np.diff(table.mean(axis=0)) > 0), table.mean(axis=0)  # monotone in level on average


def test_undefined_and_too_small_images(model):
    assert np.isnan(niqe_score(np.full((SIZE, SIZE), 128.0), model))  # flat: no statistics to fit
    with pytest.raises(ValueError, match="smaller than one 32x32"):
        niqe_score(np.zeros((20, 200)), model)


def test_model_save_load_round_trip(model, held_out, tmp_path):
    model = dataclasses.replace(
        model, anchor_scores=np.array([3.0, 4.5]), anchor_names=("a", "b"), anchor_method="in-sample"
    )
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.mean, model.mean)
    np.testing.assert_array_equal(loaded.cov, model.cov)
    np.testing.assert_array_equal(loaded.anchor_scores, model.anchor_scores)
    assert (loaded.patch_size, loaded.sharpness_threshold, loaded.n_patches, loaded.n_images) == (
        model.patch_size,
        model.sharpness_threshold,
        model.n_patches,
        model.n_images,
    )
    assert loaded.anchor_names == ("a", "b") and loaded.anchor_method == "in-sample"
    img = held_out["chelsea"]
    assert niqe_score(img, loaded) == niqe_score(img, model)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        load_model(tmp_path / "bad.npz")


# --- fit step and teacher on a folder of demo images ---------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, held_out) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("niqe")
    (root / "refs").mkdir()
    for name in FIT_REFS:
        Image.fromarray(load_reference(name, SIZE)).save(root / "refs" / f"{name}.png")
    paths = {}
    for name, img in held_out.items():
        for lv in (0, 1, LEVELS_N):
            key = name if lv == 0 else f"{name}_blur{lv}"
            paths[key] = root / f"{key}.png"
            Image.fromarray(img if lv == 0 else _distort(img, "gaussian_blur", lv)).save(paths[key])
    paths["corrupt"] = root / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths["refs"] = root / "refs"
    paths["model"] = root / "niqe.npz"
    fit_niqe(paths["refs"], {"backend": "niqe", "patch_size": PATCH}, paths["model"])
    return paths


def _teacher(files, **spec):
    return make_teacher({"backend": "niqe", "model_path": str(files["model"]), "patch_size": PATCH, **spec}, {})


def test_fit_niqe_stores_leave_one_out_anchors(files, model):
    fitted = load_model(files["model"])
    assert fitted.anchor_method == "leave-one-out"
    assert fitted.anchor_names == tuple(sorted(FIT_REFS))
    assert np.isfinite(fitted.anchor_scores).all() and len(fitted.anchor_scores) == len(FIT_REFS)
    # same photos, same patch size as the in-memory fit -> the same pristine MVG
    np.testing.assert_allclose(fitted.mean, model.mean, rtol=1e-6)
    # each photo is scored by a model that never saw it, so anchors exceed its in-sample NIQE on average
    in_sample = [niqe_score(load_reference(n, SIZE), model) for n in sorted(FIT_REFS)]
    assert np.median(fitted.anchor_scores) > np.median(in_sample)


def test_fit_niqe_cli_rejects_unknown_setting(files, tmp_path, capsys):
    argv = [
        "--references-dir",
        str(files["refs"]),
        "--settings",
        json.dumps({"patch_size": 32, "bogus": 1}),
        "--out",
        str(tmp_path / "m.npz"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_step(fit_main, argv)
    assert exit_info.value.code == 2
    assert "teachers.<name>.bogus" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_fit_niqe_falls_back_to_in_sample_anchors_and_checks_inputs(files, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("rocket.png", "brick.png"):
        (two / name).write_bytes((files["refs"] / name).read_bytes())
    fitted = fit_niqe(two, {"patch_size": PATCH}, tmp_path / "m.npz")
    assert fitted.anchor_method == "in-sample" and load_model(tmp_path / "m.npz").anchor_method == "in-sample"
    with pytest.raises(InputError, match="missing_dir"):
        fit_niqe(tmp_path / "missing_dir", {}, tmp_path / "m2.npz")
    with pytest.raises(InputError, match="smaller than one 256x256"):
        fit_niqe(two, {"patch_size": 256}, tmp_path / "m3.npz")


def test_teacher_point_scores_rank_pristine_above_blur(files):
    refs = [ImageRef(k, str(v)) for k, v in files.items() if k not in ("corrupt", "refs", "model")]
    with _teacher(files) as teacher:
        assert "classical NR-IQA stand-in for the MLLM" in teacher.describe()["description"]
        scores = teacher.score_points(refs)
    by_id = {}
    for ref, s in zip(refs, scores, strict=True):
        assert s.error is None and s.mass == 1.0 and s.missing == []
        assert len(s.logliks) == len(LEVELS) and np.isfinite(s.logliks).all()
        assert logsumexp(s.logliks) == pytest.approx(0.0, abs=1e-9)  # normalised over the five levels
        by_id[ref.image_id] = float(expected_score(level_probabilities(np.array(s.logliks))))
    for name in HELD_OUT:
        assert by_id[name] > by_id[f"{name}_blur1"] > by_id[f"{name}_blur{LEVELS_N}"], by_id
        assert by_id[name] > 3.5 and by_id[f"{name}_blur{LEVELS_N}"] < 2.0, by_id


def test_teacher_pairs_prefer_the_sharper_image(files):
    a = ImageRef("astronaut", str(files["astronaut"]))
    b = ImageRef("astronaut_blur1", str(files["astronaut_blur1"]))
    with _teacher(files) as teacher:
        ab, ba = teacher.score_pairs([(a, b), (b, a)])
    p_ab, p_ba = pair_probability(*ab.logliks), pair_probability(*ba.logliks)
    assert p_ab > 0.5 and p_ab == pytest.approx(1.0 - p_ba)
    assert ab.mass == 1.0 and logsumexp(ab.logliks) == pytest.approx(0.0, abs=1e-12)
    with _teacher(files, pair_temperature=1000.0) as soft:
        assert 0.5 < pair_probability(*soft.score_pairs([(a, b)])[0].logliks) < p_ab


def test_teacher_level_scale_controls_spread(files):
    blurred = [ImageRef("b", str(files[f"coffee_blur{LEVELS_N}"]))]
    with _teacher(files) as default, _teacher(files, level_scale=100.0) as wide:
        s_default = expected_score(level_probabilities(np.array(default.score_points(blurred)[0].logliks)))
        s_wide = expected_score(level_probabilities(np.array(wide.score_points(blurred)[0].logliks)))
        assert wide.describe()["level_scale_source"] == "spec"
    assert s_wide > 4.0 > s_default  # 100 NIQE units per level: nothing is far from pristine


def test_corrupt_image_gives_an_error_row_naming_the_file(files):
    good = ImageRef("camera", str(files["camera"]))
    bad = ImageRef("corrupt", str(files["corrupt"]))
    with _teacher(files) as teacher:
        points = teacher.score_points([good, bad, good])
        pairs = teacher.score_pairs([(good, bad)])
    assert points[0].error is None and points[2].logliks == points[0].logliks
    assert "corrupt.png" in points[1].error and np.isnan(points[1].logliks).all()
    assert "corrupt.png" in pairs[0].error and len(pairs[0].logliks) == 2


def test_teacher_caches_scores_per_path(files, tmp_path):
    copy = tmp_path / "copy.png"
    copy.write_bytes(files["chelsea"].read_bytes())
    ref = ImageRef("chelsea", str(copy))
    with _teacher(files) as teacher:
        first = teacher.score_points([ref])[0]
        copy.unlink()  # a cached image is not read again (pairs reuse images)
        assert teacher.score_points([ref])[0].logliks == first.logliks


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"temperature": 1.0}, "teachers.<name>.temperature"),
        ({"patch_size": 48}, "teachers.<name>.patch_size"),
        ({"level_scale": -1}, "teachers.<name>.level_scale"),
    ],
)
def test_teacher_spec_errors_name_the_key(files, spec, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _teacher(files, **spec)
