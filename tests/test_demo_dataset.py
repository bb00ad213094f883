"""The embedded demo dataset: real bundled photos, graded distortions, SYNTHETIC SSIM-based MOS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import ConfigError
from leaf_steps.core.io import read_provenance
from leaf_steps.make_demo_dataset import build_demo_dataset, main, split_references

SETTINGS = {
    "name": "demo",
    "split_seed": 3,
    "test_fraction": 0.4,
    "demo": {
        "references": ["astronaut", "chelsea", "camera", "coins", "rocket"],
        "distortions": ["gaussian_blur", "gaussian_noise", "jpeg", "contrast", "pixelate", "saturation"],
        "levels": 3,
        "size": 64,
    },
}
GREY = {"camera", "coins"}


def _build(root: Path, monkeypatch: pytest.MonkeyPatch, settings=SETTINGS) -> pl.DataFrame:
    # Relative output paths, so two builds in different folders must agree value for value.
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root)
    build_demo_dataset(settings, Path("images"), Path("references"), Path("manifest.parquet"))
    return pl.read_parquet(root / "manifest.parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        df = _build(root, mp)
    return root, df


def test_manifest_schema_and_files(built):
    root, df = built
    assert df.schema == {
        "image_id": pl.String,
        "path": pl.String,
        "mos": pl.Float64,
        "split": pl.String,
        "width": pl.Int32,
        "height": pl.Int32,
        "photo": pl.String,
        "reference": pl.String,
        "distortion": pl.String,
        "level": pl.Int32,
    }
    demo = SETTINGS["demo"]
    n_refs, n_dists, n_levels = len(demo["references"]), len(demo["distortions"]), demo["levels"]
    # saturation cannot change a grey photo, so those versions are skipped
    assert df.height == n_refs * (1 + n_dists * n_levels) - len(GREY) * n_levels
    assert df["image_id"].n_unique() == df.height
    assert set(df["split"]) <= {"train", "val", "test"}
    for row in df.iter_rows(named=True):
        with Image.open(root / row["path"]) as im:
            assert im.format == "PNG" and im.mode == "RGB"  # JPEG versions are stored lossless too
            assert im.size == (row["width"], row["height"]) == (64, 64)
    assert sorted(p.stem for p in (root / "references").iterdir()) == sorted(demo["references"])
    pristine = df.filter(pl.col("distortion") == "pristine")
    assert sorted(pristine["image_id"]) == sorted(demo["references"]) and set(pristine["level"]) == {0}
    prov = read_provenance(root / "manifest.parquet")
    assert prov["mos_is_synthetic"] is True
    assert "structural_similarity" in prov["fr_metric"]["name"]
    assert sorted(prov["skipped"]) == sorted(f"{r}/saturation" for r in GREY)


def test_distorted_images_differ_from_reference(built):
    root, df = built
    for row in df.filter(pl.col("level") > 0).iter_rows(named=True):
        img = np.asarray(Image.open(root / row["path"]), dtype=np.int16)
        ref = np.asarray(Image.open(root / "references" / f"{row['reference']}.png"), dtype=np.int16)
        assert np.abs(img - ref).mean() > 0.5, row["image_id"]


def test_build_is_deterministic(built, tmp_path, monkeypatch):
    root, first = built
    second = _build(tmp_path / "again", monkeypatch)
    assert first.equals(second)
    for rel in first["path"].to_list():
        assert (root / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_split_is_by_reference(built):
    _, df = built
    per_ref = df.group_by("reference").agg(pl.col("split").n_unique().alias("n"), pl.col("split").first())
    assert (per_ref["n"] == 1).all()  # every version of a photo shares its split: no content leak
    n_test = (per_ref["split"] == "test").sum()
    assert n_test == round(SETTINGS["test_fraction"] * per_ref.height)
    assert (per_ref["split"] == "train").sum() == per_ref.height - n_test


def test_split_depends_on_seed_not_order():
    names = [f"ref{i}" for i in range(10)]
    assert split_references(names, 0.3, 0) == split_references(names[::-1], 0.3, 0)
    test_sets = {frozenset(k for k, v in split_references(names, 0.3, s).items() if v == "test") for s in range(6)}
    assert len(test_sets) > 1
    assert all(len(t) == 3 for t in test_sets)


def test_mos_decreases_with_level(built):
    _, df = built
    assert (df.filter(pl.col("distortion") == "pristine")["mos"] == 100.0).all()
    distorted = df.filter(pl.col("level") > 0)
    assert distorted["mos"].is_between(0.0, 100.0, closed="both").all() and (distorted["mos"] < 100.0).all()
    for (ref, dist), group in distorted.sort("level").group_by(["reference", "distortion"], maintain_order=True):
        mos = group["mos"].to_numpy()
        assert np.all(np.diff(mos) < 0), (ref, dist, mos)


def test_unknown_reference_is_a_config_error(tmp_path, capsys):
    bad = {**SETTINGS, "demo": {**SETTINGS["demo"], "references": ["astronaut", "chelsea", "not_a_photo"]}}
    with pytest.raises(ConfigError, match=r"dataset\.demo\.references.*not_a_photo"):
        build_demo_dataset(bad, tmp_path / "i", tmp_path / "r", tmp_path / "m.parquet")
    argv = [
        "--settings",
        '{"demo": {"references": ["astronaut", "nope"]}}',
        "--images-dir",
        str(tmp_path / "i"),
        "--references-dir",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "m.parquet"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_step(main, argv)
    assert exit_info.value.code == 2
    assert "dataset.demo.references" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.parametrize(
    "demo, key",
    [
        ({"levels": 0}, "dataset.demo.levels"),
        ({"distortions": ["fog"]}, "dataset.demo.distortions"),
        ({"size": 8}, "dataset.demo.size"),
        ({"colour": 1}, "dataset.demo.colour"),
    ],
)
def test_bad_demo_settings_name_the_key(tmp_path, demo, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_demo_dataset({"demo": demo}, tmp_path / "i", tmp_path / "r", tmp_path / "m.parquet")
