"""Dataset acquisition and manifests on small stand-ins in each benchmark's real release format.

Download -> check -> parse -> split, end to end through the step entry points: KonIQ-10k over a
loopback HTTP server (resume, dropped connection, checksum mismatch), the cloud-drive datasets
from user-placed folders or archives, and the bring-your-own folder.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from dataset_fixtures import (
    RangeServer,
    make_agiqa3k,
    make_aigiqa20k,
    make_koniq,
    make_spaq,
    write_csv,
    zip_folder,
)
from leaf_steps import download_dataset, prepare_dataset
from leaf_steps.core.errors import ConfigError, InputError, LeafError
from leaf_steps.core.io import read_provenance
from leaf_steps.datasets.common import download, random_split, sha256_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # Test traffic is 127.0.0.1 only; a proxy from the environment must not intercept it.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def fetch(name: str, resources: Path, settings: dict) -> dict:
    marker = resources / name / ".ready.json"
    download_dataset.run(
        [
            "--dataset",
            name,
            "--resources-dir",
            str(resources),
            "--settings",
            json.dumps(settings),
            "--out-marker",
            str(marker),
        ]
    )
    return json.loads(marker.read_text())


def prepare(name: str, resources: Path, settings: dict, out: Path, images_dir: Path | None = None) -> pl.DataFrame:
    argv = ["--dataset", name, "--resources-dir", str(resources), "--settings", json.dumps(settings), "--out", str(out)]
    if images_dir is not None:
        argv += ["--images-dir", str(images_dir)]
    prepare_dataset.run(argv)
    return pl.read_parquet(out)


def koniq_settings(server: RangeServer, **options) -> dict:
    opts = {
        "resolution": "512x384",
        "base_url": server.url,
        "split_url": f"{server.url}/koniq10k_distributions_sets.csv",
        "retry_wait_s": 0,
        **options,
    }
    return {"name": "koniq10k", "split_seed": 0, "test_fraction": 0.2, "options": opts}


# --------------------------------------------------------------------------- KonIQ-10k


def test_koniq_resumes_partial_download_then_prepares_official_split(tmp_path):
    fx = make_koniq(tmp_path / "server")
    archive = fx.archive_dir / "koniq10k_512x384.zip"
    resources = tmp_path / "resources"
    # An earlier run was interrupted after 1000 bytes of the image archive.
    part = resources / "koniq10k" / "downloads" / "koniq10k_512x384.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive.read_bytes()[:1000])
    with RangeServer(fx.archive_dir) as server:
        marker = fetch("koniq10k", resources, koniq_settings(server))
        assert ("koniq10k_512x384.zip", "bytes=1000-") in server.requests
        image_requests = [r for r in server.requests if r[0] == "koniq10k_512x384.zip"]
        assert image_requests == [("koniq10k_512x384.zip", "bytes=1000-")]
        n_requests = len(server.requests)
        # Idempotent: a second run finds everything and does not touch the network.
        fetch("koniq10k", resources, koniq_settings(server))
        assert len(server.requests) == n_requests
    downloaded = resources / "koniq10k" / "downloads" / "koniq10k_512x384.zip"
    assert not part.exists()
    assert marker["files"]["downloads/koniq10k_512x384.zip"]["sha256"] == sha256_file(archive)
    assert sha256_file(downloaded) == sha256_file(archive)
    assert marker["images"] == 40 and marker["ready"] is True
    assert (resources / "koniq10k" / "512x384" / fx.names[0]).is_file()

    df = prepare("koniq10k", resources, koniq_settings(server), tmp_path / "manifest.parquet")
    assert df.columns[:6] == ["image_id", "path", "mos", "split", "width", "height"]
    assert df.schema["mos"] == pl.Float64 and df.schema["width"] == pl.Int32 and df.schema["height"] == pl.Int32
    assert df.height == 40 and df["image_id"].n_unique() == 40
    assert df["split"].value_counts().sort("split").rows() == [("test", 8), ("train", 28), ("val", 4)]
    expected_split = {"training": "train", "validation": "val", "test": "test"}
    for row in df.iter_rows(named=True):
        assert row["split"] == expected_split[fx.sets[row["image_id"]]]
        assert row["mos"] == pytest.approx(fx.mos[row["image_id"]], rel=1e-12)  # the 1..5 MOS column by default
        assert (row["width"], row["height"]) == fx.image_size
        assert Path(row["path"]).is_file()
    prov = read_provenance(tmp_path / "manifest.parquet")
    assert prov["dataset"] == "koniq10k" and prov["protocol"]["split"] == "official"
    scores_csv = resources / "koniq10k" / "koniq10k_scores_and_distributions.csv"
    assert prov["source_files"]["koniq10k_scores_and_distributions.csv"] == sha256_file(scores_csv)
    assert prov["download"]["files"]["downloads/koniq10k_512x384.zip"]["sha256"] == sha256_file(archive)


def test_koniq_download_survives_a_dropped_connection(tmp_path):
    fx = make_koniq(tmp_path / "server", image_prefix="koniq10k_512x384/")  # extra top folder: still found
    with RangeServer(fx.archive_dir, cut_first={"koniq10k_512x384.zip": 5000}) as server:
        marker = fetch("koniq10k", tmp_path / "res", koniq_settings(server))
        image_requests = [r for r in server.requests if r[0] == "koniq10k_512x384.zip"]
    assert image_requests == [("koniq10k_512x384.zip", None), ("koniq10k_512x384.zip", "bytes=5000-")]
    expected = sha256_file(fx.archive_dir / "koniq10k_512x384.zip")
    assert marker["files"]["downloads/koniq10k_512x384.zip"]["sha256"] == expected
    assert marker["images"] == 40


def test_koniq_checksum_mismatch_removes_download_and_writes_no_marker(tmp_path):
    fx = make_koniq(tmp_path / "server")
    resources = tmp_path / "res"
    wrong = "0" * 64
    with RangeServer(fx.archive_dir) as server:
        with pytest.raises(InputError, match=f"sha256 mismatch: expected {wrong}"):
            fetch("koniq10k", resources, koniq_settings(server, checksums={"koniq10k_512x384.zip": wrong}))
        downloads = resources / "koniq10k" / "downloads"
        assert not (downloads / "koniq10k_512x384.zip").exists()
        assert not (downloads / "koniq10k_512x384.zip.part").exists()
        assert not (resources / "koniq10k" / ".ready.json").exists()
        right = sha256_file(fx.archive_dir / "koniq10k_512x384.zip")
        marker = fetch("koniq10k", resources, koniq_settings(server, checksums={"koniq10k_512x384.zip": right}))
    assert marker["files"]["downloads/koniq10k_512x384.zip"]["sha256"] == right


def test_download_finishes_a_complete_part_file_and_reports_http_failures(tmp_path):
    fx = make_koniq(tmp_path / "server")
    scores = fx.archive_dir / "koniq10k_scores_and_distributions.zip"
    dest = tmp_path / "dl" / scores.name
    dest.parent.mkdir()
    # The earlier run received every byte but stopped before the rename: the server answers 416.
    Path(f"{dest}.part").write_bytes(scores.read_bytes())
    with RangeServer(fx.archive_dir) as server:
        assert download(f"{server.url}/{scores.name}", dest, retry_wait_s=0) == sha256_file(scores)
        assert server.requests == [(scores.name, f"bytes={scores.stat().st_size}-")]
        with pytest.raises(LeafError, match=r"koniq10k_9x9\.zip: HTTP 404"):
            download(f"{server.url}/koniq10k_9x9.zip", tmp_path / "dl" / "x.zip", retry_wait_s=0)
        closed_port = server.url  # nothing listens there once the server is shut down
    assert dest.read_bytes() == scores.read_bytes()
    with pytest.raises(LeafError, match=r"download failed after 2 attempts"):
        download(f"{closed_port}/{scores.name}", tmp_path / "dl" / "y.zip", retries=1, retry_wait_s=0)


def test_koniq_random_split_zscore_and_determinism(tmp_path):
    fx = make_koniq(tmp_path / "server")
    resources = tmp_path / "res"
    with RangeServer(fx.archive_dir) as server:
        settings = koniq_settings(server, split="random", mos_column="MOS_zscore")
        fetch("koniq10k", resources, settings)
        assert not any(r[0] == "koniq10k_distributions_sets.csv" for r in server.requests)  # not needed
        a = prepare("koniq10k", resources, settings, tmp_path / "a.parquet")
        b = prepare("koniq10k", resources, settings, tmp_path / "b.parquet")
        other_seed = prepare("koniq10k", resources, {**settings, "split_seed": 1}, tmp_path / "c.parquet")
    assert a.equals(b)
    assert a["split"].value_counts().sort("split").rows() == [("test", 8), ("train", 32)]
    assert set(a.filter(pl.col("split") == "test")["image_id"]) != set(
        other_seed.filter(pl.col("split") == "test")["image_id"]
    )
    for row in a.iter_rows(named=True):
        assert row["mos"] == pytest.approx(fx.mos_zscore[row["image_id"]], rel=1e-12)


def test_koniq_malformed_scores_name_file_and_line(tmp_path):
    fx = make_koniq(tmp_path / "server")
    resources = tmp_path / "res"
    with RangeServer(fx.archive_dir) as server:
        settings = koniq_settings(server)
        fetch("koniq10k", resources, settings)
    scores = resources / "koniq10k" / "koniq10k_scores_and_distributions.csv"
    good = scores.read_text()
    lines = good.splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[7], "n/a")  # MOS of the 5th data row
    scores.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"distributions\.csv: line 6: MOS 'n/a' is not a finite number"):
        prepare("koniq10k", resources, settings, tmp_path / "m.parquet")
    scores.write_text(good.replace(",MOS,", ",Mos,", 1))
    with pytest.raises(InputError, match=r"koniq10k_scores_and_distributions\.csv: missing column\(s\) \['MOS'\]"):
        prepare("koniq10k", resources, settings, tmp_path / "m.parquet")
    scores.write_text(good)
    (resources / "koniq10k" / "512x384" / fx.names[3]).unlink()
    with pytest.raises(InputError, match=rf"1 of 40 listed image\(s\) not found .*{fx.names[3]} \(line 5\)"):
        prepare("koniq10k", resources, settings, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


# --------------------------------------------------------------------------- SPAQ


def test_spaq_missing_files_print_instructions_and_list_what_is_missing(tmp_path, capsys):
    pytest.importorskip("openpyxl")
    resources = tmp_path / "res"
    settings = {"name": "spaq", "options": {"expected_count": 40}}
    with pytest.raises(InputError) as err:
        fetch("spaq", resources, settings)
    message = str(err.value)
    assert "'MOS and Image attribute scores.xlsx' not found" in message and "zip -FF SPAQ.zip" in message
    out = capsys.readouterr().out
    assert "https://github.com/h4nwei/SPAQ" in out and str(resources / "spaq") in out
    # Placed, but two images are missing (a broken extraction).
    make_spaq(resources / "spaq", skip_images=("00007.jpg", "00031.jpg"))
    with pytest.raises(InputError, match=r"2 of 40 listed image\(s\) not found .*00007\.jpg \(row 8\), 00031\.jpg"):
        fetch("spaq", resources, settings)
    assert not (resources / "spaq" / ".ready.json").exists()


def test_spaq_archive_is_extracted_checked_and_a_broken_one_gets_the_repair_hint(tmp_path):
    pytest.importorskip("openpyxl")
    staging = tmp_path / "staging"
    fx = make_spaq(staging)
    resources = tmp_path / "res"
    archive = zip_folder(fx.top, resources / "spaq" / "SPAQ_fixed.zip")
    settings = {
        "name": "spaq",
        "options": {"expected_count": 40, "checksums": {"SPAQ_fixed.zip": sha256_file(archive)}},
    }
    marker = fetch("spaq", resources, settings)
    assert marker["images"] == 40
    assert marker["files"] == {"SPAQ_fixed.zip": sha256_file(archive)}
    assert marker["checksums_verified"] == {"SPAQ_fixed.zip": sha256_file(archive)}
    assert (resources / "spaq" / "SPAQ" / "TestImage" / "00040.jpg").is_file()
    # The count check is strict once configured.
    with pytest.raises(InputError, match="40 labelled images, but dataset.options.expected_count is 11125"):
        fetch("spaq", resources, {"name": "spaq", "options": {"expected_count": 11125}})
    # A split archive's first part cannot be read: the message says how to repair it.
    broken_root = tmp_path / "res2"
    (broken_root / "spaq").mkdir(parents=True)
    (broken_root / "spaq" / "SPAQ.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InputError, match=r"SPAQ\.zip: not a readable zip or tar archive(.|\n)*zip -FF SPAQ\.zip --out"):
        fetch("spaq", broken_root, {"name": "spaq"})


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs the zip command to build a split archive")
def test_spaq_real_split_zip_gets_the_repair_hint(tmp_path):
    pytest.importorskip("openpyxl")
    fx = make_spaq(tmp_path / "staging")
    target = tmp_path / "res" / "spaq"
    target.mkdir(parents=True)
    # How the authors ship it: SPAQ.z01, ..., SPAQ.zip (the last part holds the central directory).
    subprocess.run(
        ["zip", "-q", "-r", "-s", "64k", str(target / "SPAQ.zip"), fx.top.name],
        cwd=fx.top.parent,
        check=True,
        timeout=60,
    )
    assert (target / "SPAQ.z01").exists()
    with pytest.raises(InputError, match=r"SPAQ\.zip: cannot be extracted(.|\n)*zip -FF SPAQ\.zip --out SPAQ_fixed"):
        fetch("spaq", tmp_path / "res", {"name": "spaq"})
    assert not (target / "SPAQ").exists()  # nothing half-extracted is left behind
    # Following the hint, with the broken parts still lying there, works.
    subprocess.run(
        ["zip", "-FF", "SPAQ.zip", "--out", "SPAQ_fixed.zip"],
        cwd=target,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )  # (with -q, zip -FF writes an empty archive)
    marker = fetch("spaq", tmp_path / "res", {"name": "spaq", "options": {"expected_count": 40}})
    assert marker["images"] == 40 and set(marker["files"]) == {"SPAQ.zip", "SPAQ_fixed.zip"}


def test_spaq_prepare_resizes_short_side_resumably_and_splits(tmp_path):
    pytest.importorskip("openpyxl")
    resources = tmp_path / "res"
    fx = make_spaq(resources / "spaq")
    settings = {"name": "spaq", "split_seed": 7, "test_fraction": 0.2, "options": {"resize_short_side": 48}}
    images_dir = tmp_path / "derived"
    df = prepare("spaq", resources, settings, tmp_path / "m.parquet", images_dir)
    assert df.height == 40
    assert df["split"].value_counts().sort("split").rows() == [("test", 8), ("train", 32)]
    for row in df.iter_rows(named=True):
        w, h = fx.sizes[row["image_id"]]
        expect = (64, 48) if w > h else (48, 64)  # short side 48, long side scaled (96x72 -> 64x48)
        assert (row["width"], row["height"]) == expect
        assert Image.open(row["path"]).size == expect
        assert Path(row["path"]).parent == images_dir / "short48"
        assert row["mos"] == pytest.approx(fx.mos[row["image_id"]])
        assert row["source_path"].endswith(f"TestImage/{row['image_id']}")
    assert df["brightness"].is_not_null().all()
    # Resumable: existing copies are not written again; a deleted one is redone.
    first = images_dir / "short48" / "00001.jpg"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (images_dir / "short48").iterdir()}
    first.unlink()
    again = prepare("spaq", resources, settings, tmp_path / "m2.parquet", images_dir)
    assert again.equals(df)
    after = {p.name: p.stat().st_mtime_ns for p in (images_dir / "short48").iterdir()}
    assert first.is_file() and all(after[n] == t for n, t in mtimes.items() if n != "00001.jpg")
    prov = read_provenance(tmp_path / "m.parquet")
    assert prov["protocol"]["resize_short_side"] == 48 and prov["protocol"]["seed"] == 7


def test_spaq_malformed_workbook_names_the_row(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    resources = tmp_path / "res"
    fx = make_spaq(resources / "spaq", n=10)
    xlsx = fx.top / "Annotations" / "MOS and Image attribute scores.xlsx"
    wb = openpyxl.load_workbook(xlsx)
    wb.active["B4"] = "high"
    wb.save(xlsx)
    with pytest.raises(InputError, match=r"attribute scores\.xlsx: row 4: MOS 'high' is not a finite number"):
        prepare("spaq", resources, {"name": "spaq"}, tmp_path / "m.parquet", tmp_path / "d")
    wb.active["B4"] = 50.0
    wb.active["A6"] = "00002.jpg"
    wb.save(xlsx)
    with pytest.raises(InputError, match=r"row 6: duplicate Image name '00002\.jpg' \(first on row 3\)"):
        prepare("spaq", resources, {"name": "spaq"}, tmp_path / "m.parquet", tmp_path / "d")


# --------------------------------------------------------------------------- AGIQA-3K and AIGIQA-20K


def test_agiqa3k_placed_archive_to_manifest(tmp_path):
    staging = tmp_path / "staging"
    fx = make_agiqa3k(staging, image_subdir="images")
    resources = tmp_path / "res"
    zip_folder(fx.top, resources / "agiqa3k" / "downloads" / "AGIQA-3K.zip")
    marker = fetch("agiqa3k", resources, {"name": "agiqa3k"})
    assert marker["images"] == 36
    assert any("the published dataset has 2982" in w for w in marker["warnings"])
    settings = {"name": "agiqa3k", "split_seed": 3, "test_fraction": 0.25}
    df = prepare("agiqa3k", resources, settings, tmp_path / "m.parquet")
    assert df["split"].value_counts().sort("split").rows() == [("test", 9), ("train", 27)]
    by_id = {r["image_id"]: r for r in df.iter_rows(named=True)}
    assert set(by_id) == set(fx.names)
    for name in fx.names:
        assert by_id[name]["mos"] == pytest.approx(fx.mos[name])  # mos_quality, not mos_align
        assert by_id[name]["prompt"] == fx.prompts[name]  # quoted prompts with commas survive
        assert by_id[name]["generator"] == fx.generators[name]
    assert by_id["sd1.5_normal_004.jpg"]["generator"] == "sd1.5"
    assert by_id["sd1.5_normal_004.jpg"]["variant"] == "normal"
    names = sorted(fx.names)
    expected_test = {n for n, s in zip(names, random_split(names, 0.25, 3), strict=True) if s == "test"}
    assert set(df.filter(pl.col("split") == "test")["image_id"]) == expected_test


@pytest.mark.parametrize(
    "corrupt, pattern",
    [
        (lambda rows: rows[3].__setitem__(5, "four"), r"data\.csv: line 5: mos_quality 'four' is not a finite number"),
        (
            lambda rows: rows[7].__setitem__(0, rows[2][0]),
            r"data\.csv: line 9: duplicate name 'glide_normal_002\.jpg' \(first on line 4\)",
        ),
        (lambda rows: rows[4].__setitem__(0, "DALLE2_normal_999.jpg"), r"DALLE2_normal_999\.jpg \(line 6\)"),
        (lambda rows: [r.pop(5) for r in rows], r"data\.csv: missing column\(s\) \['mos_quality'\]"),
    ],
)
def test_agiqa3k_malformed_label_file(tmp_path, corrupt, pattern):
    resources = tmp_path / "res"
    fx = make_agiqa3k(resources / "agiqa3k", n=12)
    with open(fx.label_file) as fh:
        header, *rows = list(csv.reader(fh))
    corrupt([header] + rows if "missing" in pattern else rows)
    write_csv(fx.label_file, header, rows)
    with pytest.raises(InputError, match=pattern):
        prepare("agiqa3k", resources, {"name": "agiqa3k"}, tmp_path / "m.parquet")


def test_aigiqa20k_headerless_labels_train_folder_only(tmp_path):
    resources = tmp_path / "res"
    fx = make_aigiqa20k(resources / "aigiqa20k")
    marker = fetch("aigiqa20k", resources, {"name": "aigiqa20k", "options": {"expected_count": 40}})
    assert marker["images"] == 40 and marker["warnings"] == []
    df = prepare(
        "aigiqa20k", resources, {"name": "aigiqa20k", "split_seed": 0, "test_fraction": 0.2}, tmp_path / "m.parquet"
    )
    assert df.height == 40 and "DALLE2_9999.png" not in df["image_id"].to_list()  # the unlabelled val image
    assert df["split"].value_counts().sort("split").rows() == [("test", 8), ("train", 32)]
    for row in df.iter_rows(named=True):
        assert row["mos"] == pytest.approx(fx.mos[row["image_id"]], rel=1e-12)
        assert row["generator"] == fx.generators[row["image_id"]]
        assert Path(row["path"]).parent.name == "train" and (row["width"], row["height"]) == (48, 48)
    assert by_generator(df)["PixArt_alpha"] == 8  # names with an underscore in the model name
    assert "re-split" in read_provenance(tmp_path / "m.parquet")["protocol"]["split"]


def by_generator(df: pl.DataFrame) -> dict[str, int]:
    return dict(df["generator"].value_counts().rows())


def test_aigiqa20k_header_row_and_missing_placement(tmp_path, capsys):
    resources = tmp_path / "res"
    with pytest.raises(InputError, match="'info_train.csv' not found"):
        fetch("aigiqa20k", resources, {"name": "aigiqa20k"})
    assert "lcysyzxdxc/AIGCQA-30K-Image" in capsys.readouterr().out
    fx = make_aigiqa20k(resources / "aigiqa20k", n=6)
    fx.label_file.write_text("name,prompt,mos\n" + fx.label_file.read_text())
    with pytest.raises(InputError, match="line 1 is a header row"):
        fetch("aigiqa20k", resources, {"name": "aigiqa20k"})


# --------------------------------------------------------------------------- bring your own folder


def make_folder(root: Path, n: int = 12) -> list[str]:
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        rel = f"{'night' if i % 2 else 'day'}/img_{i:02d}.{'png' if i % 3 == 0 else 'jpg'}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (40 + i, 34)
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(path)
        ids.append(rel)
    (root / "notes.txt").write_text("not an image")
    return ids


def test_folder_partial_mos_unlabelled_go_to_train(tmp_path):
    images = tmp_path / "my_images"
    ids = make_folder(images)
    csv_path = tmp_path / "mos.csv"
    labelled = {ids[i]: float(i) + 0.5 for i in range(10)}
    # Every other row gives the bare file name: allowed while it is unique in the folder.
    rows = [[k if i % 2 else Path(k).name, v] for i, (k, v) in enumerate(labelled.items())]
    write_csv(csv_path, ["image", "mos"], rows)
    settings = {
        "name": "folder",
        "split_seed": 1,
        "test_fraction": 0.2,
        "options": {"images_dir": str(images), "mos_csv": str(csv_path), "mos_scale": "1..10"},
    }
    marker = fetch("folder", tmp_path / "res", settings)
    assert marker["images"] == 12 and marker["labelled"] == 10
    df = prepare("folder", tmp_path / "res", settings, tmp_path / "m.parquet")
    assert sorted(df["image_id"]) == sorted(ids)
    for row in df.iter_rows(named=True):
        if row["image_id"] in labelled:
            assert row["mos"] == labelled[row["image_id"]]
        else:
            assert row["mos"] is None and row["split"] == "train"
        assert (row["width"], row["height"]) == Image.open(row["path"]).size
    lab = df.filter(pl.col("mos").is_not_null())
    assert lab["split"].value_counts().sort("split").rows() == [("test", 2), ("train", 8)]
    assert read_provenance(tmp_path / "m.parquet")["protocol"]["mos_scale"] == "1..10"


@pytest.mark.parametrize(
    "rows, pattern",
    [
        ([["day/img_00.png", "1"], ["day/missing.jpg", "2"]], r"mos\.csv: line 3: image 'day/missing\.jpg' not found"),
        ([["day/img_00.png", "1"], ["day/img_00.png", "2"]], r"mos\.csv: line 3: duplicate image 'day/img_00\.png'"),
        (
            [["day/img_00.png", "1"], ["img_00.png", "2"]],
            r"mos\.csv: line 3: image 'img_00\.png' is the same file as line 2",
        ),
        ([["day/img_00.png", "good"]], r"mos\.csv: line 2: mos 'good' is not a finite number"),
    ],
)
def test_folder_bad_mos_csv(tmp_path, rows, pattern):
    images = tmp_path / "imgs"
    make_folder(images)
    write_csv(tmp_path / "mos.csv", ["image", "mos"], rows)
    settings = {"name": "folder", "options": {"images_dir": str(images), "mos_csv": str(tmp_path / "mos.csv")}}
    with pytest.raises(InputError, match=pattern):
        prepare("folder", tmp_path / "res", settings, tmp_path / "m.parquet")


def test_folder_without_images_or_dir_option(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        fetch("folder", tmp_path / "res", {"name": "folder", "options": {"images_dir": str(tmp_path / "empty")}})
    with pytest.raises(ConfigError, match="dataset.options.images_dir: required"):
        fetch("folder", tmp_path / "res", {"name": "folder"})


# --------------------------------------------------------------------------- CLI contract


def test_random_split_is_order_independent_and_keeps_both_sides():
    ids = [f"{i:03d}.jpg" for i in range(50)]
    a = dict(zip(ids, random_split(ids, 0.2, 5), strict=True))
    rev = list(reversed(ids))
    b = dict(zip(rev, random_split(rev, 0.2, 5), strict=True))
    assert a == b and sum(s == "test" for s in a.values()) == 10
    assert random_split(["a", "b"], 0.01, 0).count("test") == 1


def test_cli_errors_are_one_line_exit_2(tmp_path):
    settings = json.dumps({"name": "spaq"})
    argv = [
        "--dataset",
        "agiqa3k",
        "--resources-dir",
        str(tmp_path),
        "--settings",
        settings,
        "--out",
        str(tmp_path / "m.parquet"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "leaf_steps.prepare_dataset", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error: dataset.name: settings say 'spaq' but the step was run with --dataset agiqa3k" in proc.stderr
    with pytest.raises(LeafError, match="dataset.options.resolution: must be one of"):
        fetch("koniq10k", tmp_path, {"name": "koniq10k", "options": {"resolution": "800x600"}})
