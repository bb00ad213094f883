"""The whole DAG, for real, on the tiny demo configuration (tests/configs/tiny.yaml, about a minute
on 2 cores). The run is the session's shared one (tests/tiny_run.py), also used by the report and
rerun tests.

Also checks the reproducibility promise: the same config and seeds from scratch, in another working
directory, give the same manifest, pairs, teacher scores, subsets, stage-1 selections and predictions.
The second run builds only what that comparison needs: one student through both stages (and the
teacher baseline) for one seed, not every variant and seed again.
"""

import polars as pl
import pytest
import yaml

from tiny_run import Run, real_tiny_run, run_snakemake, tiny_config

# What the second run rebuilds and compares, relative to results/<run_name>: every kind of step once.
REPRODUCED = (
    "pairs/pairs.parquet",
    "subsets/ratio0.3/seed1.parquet",
    "teacher/standin/points.parquet",
    "teacher/standin/pairs_tau0.1.parquet",
    "predictions/leaf/labelfree.parquet",
    "predictions/leaf/ratio0.3/seed1.parquet",
    "predictions/teacher_linear/ratio0.3/seed1.parquet",
    "students/leaf/ratio0.3/seed1/stage1_selection.parquet",
)
# Metrics are computed by one evaluation job over every prediction file (the common test set), so the
# second run stops at the predictions: equal predictions and manifests give equal metrics.


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return real_tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_demo_dag_end_to_end(run):
    out = run.results
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
        "epoch1.safetensors",
        "epoch2.safetensors",
    ]

    # Nothing changed: nothing to do.
    again = run_snakemake(run, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_same_config_and_seeds_reproduce_the_run(run, tmp_path):
    # From scratch in another working directory and results folder (the demo images are generated
    # again there too).
    cfg = tiny_config(results_dir="results_b")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    other_run = Run(tmp_path, tmp_path / "b.yaml", tmp_path / "results_b" / cfg["run_name"])
    targets = [str(other_run.results.relative_to(tmp_path) / rel) for rel in REPRODUCED]
    second = run_snakemake(other_run, *targets)
    assert second.returncode == 0, second.stderr[-4000:]
    assert not (other_run.results / "summary").exists()  # only what the comparison needs was built

    out, other = run.results, other_run.results
    manifests = [pl.read_parquet(d / "dataset/manifest.parquet").drop("path") for d in (out, other)]
    assert manifests[0].equals(manifests[1])  # paths differ by results folder; ids, MOS, splits do not
    for rel in REPRODUCED:
        assert pl.read_parquet(out / rel).equals(pl.read_parquet(other / rel)), rel
