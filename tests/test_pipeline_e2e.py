"""The whole DAG, for real, on a tiny demo configuration (about a minute on 2 cores).

Also checks the reproducibility promise: a second run from scratch with the same config and
seeds gives the same pairs, subsets and metrics.
"""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(results_dir: str) -> dict:
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["run_name"] = "tiny"
    cfg["results_dir"] = results_dir
    cfg["resources_dir"] = "resources"
    cfg["dataset"]["demo"] |= {"references": ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins"],
                               "distortions": ["gaussian_blur", "gaussian_noise"], "levels": 3, "size": 64}
    cfg["dataset"]["test_fraction"] = 0.34
    cfg["teachers"] = {"standin": {"backend": "niqe", "patch_size": 16}}
    cfg["scoring"] |= {"shards": 2, "batch_size": 8}
    cfg["student"] |= {"resize": 40, "crop": 32}
    cfg["distill"] |= {"epochs": 2, "batch_size": 8, "pair_batch_size": 8}
    cfg["calibration"] |= {"ratios": [0, 0.3], "seeds": [0, 1], "epochs": 2, "batch_size": 4, "val_fraction": 0.2}
    return cfg


def run_snakemake(workdir: Path, configfile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *extra]
    # Rules call `python -m leaf_steps...`: the interpreter running the tests must be the one found.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_demo_dag_end_to_end_and_reproducible(tmp_path):
    for name, results in (("a.yaml", "results_a"), ("b.yaml", "results_b")):
        (tmp_path / name).write_text(yaml.safe_dump(tiny_config(results)))
    first = run_snakemake(tmp_path, tmp_path / "a.yaml")
    assert first.returncode == 0, first.stderr[-4000:]
    out = tmp_path / "results_a" / "tiny"

    table = (out / "summary/table.md").read_text()
    for row in ("Teacher (zero-shot)", "Teacher + linear calibration", "CFT-only", "LEAF (leaf)"):
        assert row in table
    summary = pl.read_parquet(out / "summary/summary.parquet")
    assert set(summary["method"]) == {"teacher_zero_shot", "teacher_linear", "cft_only", "leaf"}
    assert summary.filter(pl.col("method") == "leaf")["ratio"].sort().to_list() == [0.0, 0.3]
    assert summary.filter(pl.col("ratio") == 0.3)["n_runs"].to_list() == [2, 2, 2]  # two seeds each
    for png in ("label_efficiency.png", "teacher_vs_mos.png"):
        assert (out / "figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = pl.read_parquet(out / "students/leaf/stage1/losses.parquet")
    assert losses.height == 2 and losses["selected"].sum() == 1

    # Every cell on the same test images, and the table says how many; raw and logistic PLCC side by side.
    runs = pl.read_parquet(out / "summary/runs.parquet")
    assert runs["n"].n_unique() == 1 and runs.height == 8
    assert f"Every cell: the same {runs['n'][0]} test images" in table
    assert {"plcc_mean", "plcc_logistic_mean", "n_images"} <= set(summary.columns)
    assert pl.read_parquet(out / "summary/coverage.parquet").height == runs["n_missing"].sum()
    # Few-shot calibrations start from the stage-1 epoch chosen on their own subset; label-free keeps the
    # teacher rule's epoch; the table says both.
    teacher_epoch = losses.filter("selected")["epoch"][0]
    for seed in (0, 1):
        chosen = pl.read_parquet(out / f"students/leaf/ratio0.3/seed{seed}/stage1_selection.parquet")
        calibration = pl.read_parquet(out / f"students/leaf/ratio0.3/seed{seed}/losses.parquet")
        assert calibration["stage1_epoch"].unique().to_list() == chosen.filter("selected")["epoch"].to_list()
    leaf_runs = runs.filter(pl.col("method") == "leaf").sort("ratio", "seed", nulls_last=False)
    assert leaf_runs["stage1_selection"].to_list() == ["teacher", "mos_subset", "mos_subset"]
    assert leaf_runs["stage1_epoch"][0] == teacher_epoch
    assert "mos_subset rule" in table and "teacher rule" in table
    assert sorted(p.name for p in (out / "students/leaf/stage1/epochs").iterdir()) == [
        "epoch1.safetensors", "epoch2.safetensors"]

    # Nothing changed: nothing to do.
    again = run_snakemake(tmp_path, tmp_path / "a.yaml", "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # Same config and seeds from scratch in another results folder (the demo images are generated
    # again there too): same manifest, pairs, subsets, metrics.
    second = run_snakemake(tmp_path, tmp_path / "b.yaml")
    assert second.returncode == 0, second.stderr[-4000:]
    other = tmp_path / "results_b" / "tiny"
    manifests = [pl.read_parquet(d / "dataset/manifest.parquet").drop("path") for d in (out, other)]
    assert manifests[0].equals(manifests[1])  # paths differ by results folder; ids, MOS, splits do not
    for rel in ("pairs/pairs.parquet", "subsets/ratio0.3/seed1.parquet", "teacher/standin/pairs_tau0.1.parquet",
                "summary/runs.parquet"):
        assert pl.read_parquet(out / rel).equals(pl.read_parquet(other / rel)), rel
