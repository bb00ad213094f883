"""The dataset stage reruns when the files it reads change, and only then (Snakemake's Python API, dry runs
on a completed run; see tests/tiny_run.py). A folder dataset with the NIQE stand-in teacher: the stand-in's
pristine model (fitted on scikit-image's photos) is the one job that does not read the manifest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from leaf_steps.datasets.fingerprint import dataset_fingerprint
from test_reruns import planned, with_config
from tiny_run import ROOT, Run, dryrun, touched_tiny_run


def photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def folder_run_config(data: Path, run_name: str = "mine", split_seed: int = 0) -> dict:
    cfg = yaml.safe_load((ROOT / "config/folder_example.yaml").read_text())
    cfg["run_name"] = run_name
    cfg["dataset"]["split_seed"] = split_seed
    cfg["dataset"]["options"] = {"images_dir": str(data / "images"), "mos_csv": str(data / "mos.csv")}
    cfg["teachers"] = {"standin": {"backend": "niqe", "patch_size": 16}}
    cfg["scoring"]["shards"] = 1
    cfg["calibration"] |= {"ratios": [0, 0.3], "seeds": [0]}
    return cfg


def make_data(data: Path, n: int = 30) -> None:
    rows = ["image,mos"]
    for i in range(n):
        photo(data / "images" / f"{'a' if i % 2 else 'b'}/{i:02d}.png", seed=i)
        rows.append(f"{'a' if i % 2 else 'b'}/{i:02d}.png,{i / 3:.2f}")
    (data / "mos.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Run, Path]:
    data = tmp_path_factory.getbasetemp() / "folder_data"
    make_data(data)
    return touched_tiny_run(tmp_path_factory, "folder_touched", folder_run_config(data)), data


@pytest.fixture(scope="module")
def all_jobs(done, tmp_path_factory) -> set:
    run, _ = done
    fresh = tmp_path_factory.mktemp("fresh")
    cfg_path = fresh / "tiny.yaml"
    cfg_path.write_text(run.configfile.read_text())
    return planned(Run(fresh, cfg_path, fresh / "results" / "mine"))


def bump_mtime(path: Path) -> None:
    later = time.time() + 5
    os.utime(path, (later, later))


def test_nothing_changed_nothing_runs(done):
    run, _ = done
    assert planned(run) == set()


@pytest.mark.parametrize("change", ["add", "remove", "rename", "edit", "touch", "mos"])
def test_a_change_to_what_the_dataset_reads_reruns_it_and_what_it_reaches(done, all_jobs, change):
    run, data = done
    images = data / "images"
    target = images / "b/04.png"
    backup = target.read_bytes()
    csv = (data / "mos.csv").read_text()
    stamps = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (target, data / "mos.csv")}
    try:
        if change == "add":
            photo(images / "c/new.png", seed=99)
        elif change == "remove":
            target.unlink()
        elif change == "rename":
            target.rename(images / "b/04-renamed.png")
        elif change == "edit":
            photo(target, seed=1234)
        elif change == "touch":
            bump_mtime(target)
        else:
            (data / "mos.csv").write_text(csv.replace("b/04.png,1.33", "b/04.png,1.50"))
        changed = planned(run)
    finally:
        (images / "c/new.png").unlink(missing_ok=True)
        (images / "b/04-renamed.png").unlink(missing_ok=True)
        target.write_bytes(backup)
        (data / "mos.csv").write_text(csv)
        for path, ns in stamps.items():  # as it was: the completed run must stay up to date for the next test
            os.utime(path, ns=ns)
    expected = {job for job in all_jobs if job[0] != "fit_niqe"}
    assert changed == expected


def test_files_the_dataset_does_not_read_rerun_nothing(done):
    run, data = done
    notes = data / "images" / "notes.txt"
    hidden = data / "images" / ".DS_Store"
    try:
        notes.write_text("not an image")
        hidden.write_bytes(b"\0")
        assert planned(run) == set()
    finally:
        notes.unlink(missing_ok=True)
        hidden.unlink(missing_ok=True)
    assert planned(run) == set()  # and putting things back reruns nothing either


def test_a_second_config_of_the_same_dataset_does_not_invalidate_the_first(done, tmp_path_factory):
    run, data = done
    # Same folder, another run with another split: completed in the same working directory.
    other_cfg = folder_run_config(data, run_name="mine-split1", split_seed=1)
    other = Run(run.workdir, run.workdir / "other.yaml", run.workdir / "results" / "mine-split1")
    other.configfile.write_text(yaml.safe_dump(other_cfg, sort_keys=False))
    for path, is_dir in dryrun(other, collect="paths"):
        target = run.workdir / path
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    assert dryrun(other, executor="touch")
    assert planned(run) == set()
    assert planned(other) == set()
    # Their markers are their own; nothing is written under resources/folder/ but the verdict cache.
    assert (run.results / "dataset/download.json").exists() and (other.results / "dataset/download.json").exists()
    assert not (run.workdir / "resources/folder/.ready.json").exists()


def test_fingerprint_covers_names_sizes_mtimes_only(tmp_path):
    root = tmp_path / "res"
    fx = root / "agiqa3k" / "AGIQA-3K"
    photo(fx / "x_normal_000.jpg", seed=0)
    (fx / "data.csv").write_text("name,prompt,mos_quality\nx_normal_000.jpg,p,2.5\n")
    fp = lambda: dataset_fingerprint("agiqa3k", {"name": "agiqa3k"}, root)  # noqa: E731
    first = fp()
    assert first.startswith("2 files:")
    (root / "agiqa3k" / ".image_checks.parquet").write_bytes(b"cache")  # LEAF's own hidden files
    (root / "agiqa3k" / ".extracted.a.zip.json").write_text("{}")
    photo(root / "agiqa3k" / "derived" / "short512" / "x.jpg", seed=1)  # derived copies
    (fx / "readme.txt").write_text("not read")
    assert fp() == first
    (fx / "data.csv").write_text("name,prompt,mos_quality\nx_normal_000.jpg,p,2.6\n")
    assert fp() != first
    missing = dataset_fingerprint("folder", {"options": {"images_dir": str(tmp_path / "nope")}}, root)
    assert missing.startswith("0 files:")


def test_leaf_why_names_the_dataset_files(done):
    from test_why import job_block, leaf_why

    run, data = done
    extra = data / "images" / "c" / "extra.png"
    try:
        photo(extra, seed=7)
        text = leaf_why(run)
    finally:
        extra.unlink()
    reasons = job_block(text, "download_dataset")  # the folder check reads the images; prepare follows it
    # 30 images and mos.csv, then one image more
    assert any(r.startswith("setting dataset_files: '31 files:") and "-> '32 files:" in r for r in reasons), text


def test_a_new_split_of_a_folder_rescores_no_point(done, tmp_path):
    run, _ = done
    changed = planned(with_config(run, tmp_path, lambda cfg: cfg["dataset"].update(split_seed=7)))
    rules = {rule for rule, _ in changed}
    # The image list (teacher scoring's input) does not depend on the split: only the manifest is made again.
    assert "prepare_dataset" in rules and not rules & {
        "download_dataset",
        "list_images",
        "score_points",
        "gather_points",
        "fit_niqe",
    }
