"""Every table cell on the same test images (leaf_steps.evaluation.common_set, the evaluate step) and the
summary table (leaf_steps.aggregate): raw and logistic PLCC side by side, image counts, stage-1 rules."""

import numpy as np
import polars as pl
import pytest
from scipy import stats

from leaf_steps import aggregate, evaluate
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_provenance, write_parquet
from leaf_steps.evaluation import teacher_baselines
from leaf_steps.evaluation.common_set import NO_PREDICTION, NOT_FINITE, Run, evaluate_runs, labelled_test_images
from leaf_steps.evaluation.metrics import iqa_metrics

N_TEST = 12


@pytest.fixture
def manifest():
    rng = np.random.default_rng(3)
    ids = [f"t{i:02d}" for i in range(N_TEST)] + ["t_nomos", "tr0", "tr1", "tr2"]
    mos = list(rng.uniform(10, 90, N_TEST)) + [None, 50.0, 60.0, 70.0]
    split = ["test"] * (N_TEST + 1) + ["train"] * 3
    return pl.DataFrame({"image_id": ids, "split": split, "mos": mos}, schema_overrides={"mos": pl.Float64})


@pytest.fixture
def teacher_points(manifest):
    """Teacher scores on every image; rows for t02 and t07 failed (error rows, as score_points writes them)."""
    rng = np.random.default_rng(4)
    mos = manifest["mos"].fill_null(50.0).to_numpy()
    score = np.clip(1 + 4 * (mos - 10) / 80 + rng.normal(0, 0.4, manifest.height), 1, 5)
    failed = manifest["image_id"].is_in(["t02", "t07"])
    return pl.DataFrame(
        {
            "image_id": manifest["image_id"],
            "teacher_score": pl.Series(score).set(failed, None),
            "error": pl.Series([None] * manifest.height, dtype=pl.String).set(failed, "timeout"),
        }
    )


@pytest.fixture
def student(manifest):
    """A student prediction on every test image, one of them NaN (t05)."""
    rng = np.random.default_rng(5)
    test = manifest.filter(pl.col("split") == "test")
    pred = test["mos"].fill_null(0.0).to_numpy() * 0.5 + rng.normal(0, 8, test.height)
    pred[test["image_id"].to_list().index("t05")] = np.nan
    return pl.DataFrame({"image_id": test["image_id"], "prediction": pred})


def test_methods_lacking_images_make_every_run_use_the_common_set(manifest, teacher_points, student):
    test = labelled_test_images(manifest)
    zero_shot = teacher_baselines.zero_shot(teacher_points, manifest.filter(pl.col("split") == "test"))
    assert zero_shot.height == N_TEST + 1 - 2  # the failed rows are skipped by the baseline
    runs = [
        Run("teacher_zero_shot", 0.0, None, zero_shot.select("image_id", "prediction")),
        Run("leaf", 0.1, 0, student, stage1_epoch=4, stage1_selection="mos_subset"),
    ]
    table, lacking, common = evaluate_runs(test, runs)

    # Coverage: which run lacked which image, and why.
    assert lacking.select("method", "image_id", "reason").rows() == [
        ("leaf", "t05", NOT_FINITE),
        ("teacher_zero_shot", "t02", NO_PREDICTION),
        ("teacher_zero_shot", "t07", NO_PREDICTION),
    ]
    assert sorted(common["image_id"]) == sorted(set(test["image_id"]) - {"t02", "t05", "t07"})
    assert table["n"].to_list() == [N_TEST - 3] * 2 and table["n_test"].to_list() == [N_TEST] * 2
    assert dict(zip(table["method"], table["n_missing"])) == {"leaf": 1, "teacher_zero_shot": 2}

    # The metrics are those of the common images, computed here independently.
    keep = ~test["image_id"].is_in(["t02", "t05", "t07"])
    y = test.filter(keep)["mos"].to_numpy()
    for run in runs:
        row = table.filter(pl.col("method") == run.method).row(0, named=True)
        x = test.filter(keep).join(run.predictions, on="image_id", how="left")["prediction"].to_numpy()
        assert row["srcc"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert row["plcc"] == pytest.approx(stats.pearsonr(x, y).statistic)
        assert row["plcc_logistic"] == pytest.approx(iqa_metrics(x, y)["plcc_logistic"])
    # On its own images the teacher would have scored 10 images (and another SRCC): not what the table uses.
    own = test.join(zero_shot, on="image_id")
    assert own.height == N_TEST - 2
    assert table.filter(pl.col("method") == "leaf")["stage1_epoch"].to_list() == [4]


def test_duplicate_and_too_sparse_predictions_are_errors(manifest, student):
    test = labelled_test_images(manifest)
    dup = pl.concat([student, student.head(1)])
    with pytest.raises(InputError, match=r"b.parquet: image_id 't00' has more than one prediction"):
        evaluate_runs(test, [Run("a", 0.0, None, student), Run("b", 0.0, None, dup, source="b.parquet")])
    sparse = student.head(2)
    with pytest.raises(InputError, match=r"only 2 of 12 .* sparse ratio 0.3 seed 1: 10; a label-free: 1"):
        evaluate_runs(test, [Run("a", 0.0, None, student), Run("sparse", 0.3, 1, sparse)])


def _runs(tmp_path, manifest, teacher_points, student):
    test = manifest.filter(pl.col("split") == "test")
    zero_shot = teacher_baselines.zero_shot(teacher_points, test).select("image_id", "prediction")
    files = {
        "zs": zero_shot,
        "leaf0": student,
        "leaf1": student.with_columns(pl.col("prediction") * 1.1),
        "lf": student.with_columns(pl.col("prediction").fill_nan(1.0) + 3),
    }
    prov = {
        "leaf0": {"stage1_epoch": 3, "stage1_selection": "mos_subset"},
        "leaf1": {"stage1_epoch": 5, "stage1_selection": "mos_subset"},
        "lf": {"stage1_epoch": 2, "stage1_selection": "teacher"},
    }
    for name, frame in files.items():
        write_parquet(frame, tmp_path / f"{name}.parquet", {"step": "test", **prov.get(name, {})})
    manifest.write_parquet(tmp_path / "manifest.parquet")
    evaluate.main(
        [
            "--manifest",
            str(tmp_path / "manifest.parquet"),
            "--run",
            "teacher_zero_shot",
            "0",
            "-",
            str(tmp_path / "zs.parquet"),
            "--run",
            "leaf",
            "0",
            "-",
            str(tmp_path / "lf.parquet"),
            "--run",
            "leaf",
            "0.1",
            "0",
            str(tmp_path / "leaf0.parquet"),
            "--run",
            "leaf",
            "0.1",
            "1",
            str(tmp_path / "leaf1.parquet"),
            "--out-runs",
            str(tmp_path / "runs.parquet"),
            "--out-coverage",
            str(tmp_path / "coverage.parquet"),
        ]
    )
    return tmp_path / "runs.parquet"


def test_evaluate_and_aggregate_steps_say_what_each_cell_used(tmp_path, manifest, teacher_points, student):
    runs_path = _runs(tmp_path, manifest, teacher_points, student)
    runs = pl.read_parquet(runs_path)
    assert set(runs["n"]) == {N_TEST - 3}
    assert runs.filter(pl.col("method") == "leaf").sort("ratio", "seed", nulls_last=False)[
        "stage1_epoch"
    ].to_list() == [2, 3, 5]
    coverage = pl.read_parquet(tmp_path / "coverage.parquet")
    assert coverage.filter(pl.col("method") == "teacher_zero_shot")["image_id"].to_list() == ["t02", "t07"]
    assert read_provenance(tmp_path / "coverage.parquet")["n_common"] == N_TEST - 3

    aggregate.main(
        [
            "--runs",
            str(runs_path),
            "--out-summary",
            str(tmp_path / "summary.parquet"),
            "--out-markdown",
            str(tmp_path / "table.md"),
            "--methods",
            "teacher_zero_shot",
            "leaf",
            "--headline",
            "leaf",
            "--title",
            "T",
        ]
    )
    summary = pl.read_parquet(tmp_path / "summary.parquet")
    # Raw and logistic PLCC side by side, each the mean over seeds of the runs' values.
    cell = summary.filter((pl.col("method") == "leaf") & (pl.col("ratio") == 0.1)).row(0, named=True)
    few = runs.filter((pl.col("method") == "leaf") & (pl.col("ratio") == 0.1))
    assert cell["plcc_mean"] == pytest.approx(few["plcc"].mean())
    assert cell["plcc_logistic_mean"] == pytest.approx(few["plcc_logistic"].mean())
    assert cell["plcc_logistic_mean"] != pytest.approx(cell["plcc_mean"])
    assert cell["n_images"] == N_TEST - 3 and cell["n_runs"] == 2
    assert read_provenance(tmp_path / "summary.parquet")["table_plcc"] == "plcc"

    table = (tmp_path / "table.md").read_text()
    assert f"Every cell: the same {N_TEST - 3} of the {N_TEST} test images with a MOS" in table
    assert "Teacher (zero-shot) lacks 2" in table and "LEAF (leaf) lacks 1" in table
    assert "PLCC is the raw Pearson correlation" in table
    # The table's PLCC cell is the raw one.
    assert f"{cell['plcc_mean']:.3f} ± {cell['plcc_std']:.3f}" in table
    assert (
        "- LEAF (leaf): label-free: epoch 2 (teacher rule); 10% MOS: epochs 3, 5 (seeds 0, 1; mos_subset rule)."
        in table
    )
    assert "teacher rule: the lowest held-out distillation loss" in table and "mos_subset rule: the highest" in table


def test_stage1_notes_name_a_seed_that_fell_back_to_the_teacher_rule():
    runs = pl.DataFrame(
        {
            "method": ["leaf"] * 3,
            "ratio": [0.1] * 3,
            "seed": [0, 1, 2],
            "stage1_epoch": [3, 8, 4],
            "stage1_selection": ["mos_subset", "teacher", "mos_subset"],
        }
    )
    notes = aggregate.stage1_notes(runs, ["leaf"], "leaf")
    assert notes[1] == (
        "- LEAF (leaf): 10% MOS: epochs 3, 8, 4 (seeds 0, 1, 2; mos_subset rule; seed 1: teacher rule)."
    )


def test_cells_on_different_images_each_say_their_count():
    base = {
        "seed": 0,
        "n_test": 10,
        "n_missing": 0,
        "srcc": 0.5,
        "plcc": 0.5,
        "plcc_logistic": 0.6,
        "krcc": 0.4,
        "rmse": 1.0,
        "rmse_logistic": 0.9,
    }
    runs = pl.DataFrame([{**base, "method": "a", "ratio": 0.1, "n": 10}, {**base, "method": "b", "ratio": 0.1, "n": 8}])
    summary = aggregate.summarize(runs)
    table = aggregate.markdown_table(summary, ["a", "b"], None)
    assert "(n=10)" in table and "(n=8)" in table
    assert "different test images" in aggregate.image_note(runs, None)
    mixed = pl.concat([runs, pl.DataFrame([{**base, "method": "a", "ratio": 0.1, "n": 9, "seed": 1}])])
    with pytest.raises(InputError, match="runs of a at ratio 0.1 were evaluated on different numbers"):
        aggregate.summarize(mixed)


def test_aggregate_refuses_runs_the_table_would_leave_out(tmp_path, manifest, teacher_points, student):
    runs_path = _runs(tmp_path, manifest, teacher_points, student)
    with pytest.raises(InputError, match=r"\['leaf'\] are not in --methods"):
        aggregate.main(
            [
                "--runs",
                str(runs_path),
                "--out-summary",
                str(tmp_path / "s.parquet"),
                "--out-markdown",
                str(tmp_path / "t.md"),
                "--methods",
                "teacher_zero_shot",
            ]
        )
