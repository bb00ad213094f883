"""Stage-1 checkpoint selection rules (leaf_steps.training.selection, leaf_steps.select_stage1) on small
tables whose per-epoch predictions are set by hand, so that which epoch each subset must pick is known.
The end-to-end path (real distillation, per-subset selection, calibration from the chosen epoch) is in
tests/test_student.py."""

import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats

from leaf_steps import select_stage1
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_provenance, write_parquet
from leaf_steps.training.epochs import EPOCH_PREDICTION_SCHEMA, candidate_epochs
from leaf_steps.training.selection import calib_val_hash, find_epoch_checkpoint, select_on_calib_val

MOS = {f"a{i}": 10.0 * i for i in range(5)} | {f"b{i}": 10.0 * i for i in range(5)}


def epoch_predictions(by_epoch: dict[int, dict[str, float]]) -> pl.DataFrame:
    rows = [{"image_id": i, "epoch": e, "prediction": p} for e, preds in by_epoch.items() for i, p in preds.items()]
    return pl.DataFrame(rows, schema=EPOCH_PREDICTION_SCHEMA)


def subset(val_ids, train_ids=("t0", "t1")) -> pl.DataFrame:
    rows = [{"image_id": i, "role": "calib_val", "mos": MOS[i]} for i in val_ids]
    rows += [{"image_id": i, "role": "calib_train", "mos": 50.0 + k} for k, i in enumerate(train_ids)]
    return pl.DataFrame(rows)


# Epoch 1 ranks the a-images like their MOS and reverses the b-images; epoch 2 the other way round;
# epoch 3 ranks both halves half right. Teacher-score units (1..5): the criterion must not care.
A_RIGHT = {f"a{i}": 1 + 0.5 * i for i in range(5)} | {f"b{i}": 5 - 0.9 * i for i in range(5)}
B_RIGHT = {f"a{i}": 5 - 0.9 * i for i in range(5)} | {f"b{i}": 1 + 0.5 * i for i in range(5)}
MIXED = {f"a{i}": [3, 1, 4, 2, 5][i] for i in range(5)} | {f"b{i}": [3, 1, 4, 2, 5][i] for i in range(5)}
PREDS = epoch_predictions({1: A_RIGHT, 2: B_RIGHT, 3: MIXED})


def oracle_epoch(preds: pl.DataFrame, ids: list[str]) -> int:
    """SRCC + PLCC on the given images straight from scipy; highest wins, earliest on ties."""
    best, best_score = None, -math.inf
    for epoch in sorted(preds["epoch"].unique()):
        p = dict(preds.filter(pl.col("epoch") == epoch).select("image_id", "prediction").iter_rows())
        x, y = np.array([p[i] for i in ids]), np.array([MOS[i] for i in ids])
        score = stats.spearmanr(x, y).statistic + stats.pearsonr(x, y).statistic
        if score > best_score:
            best, best_score = epoch, score
    return best


def test_candidate_epochs_every_nth_and_the_last():
    assert candidate_epochs(10, 1) == list(range(1, 11))
    assert candidate_epochs(10, 3) == [3, 6, 9, 10]
    assert candidate_epochs(10, 20) == [10]
    with pytest.raises(ValueError):
        candidate_epochs(0, 1)


def test_subsets_whose_held_out_images_disagree_pick_different_epochs():
    on_a = select_on_calib_val(PREDS, subset([f"a{i}" for i in range(5)]), teacher_epoch=3)
    on_b = select_on_calib_val(PREDS, subset([f"b{i}" for i in range(5)]), teacher_epoch=3)
    assert (on_a.epoch, on_a.rule, on_a.reason) == (1, "mos_subset", None)
    assert (on_b.epoch, on_b.rule, on_b.reason) == (2, "mos_subset", None)
    for choice, ids in ((on_a, [f"a{i}" for i in range(5)]), (on_b, [f"b{i}" for i in range(5)])):
        assert choice.epoch == oracle_epoch(PREDS, ids)
        assert choice.table["epoch"].to_list() == [1, 2, 3]
        assert choice.table.filter("selected")["epoch"].to_list() == [choice.epoch]
        assert choice.table["n_images"].to_list() == [5, 5, 5]
    # The criterion by hand: epoch 1 orders the a-images exactly and linearly -> SRCC = PLCC = 1.
    assert on_a.table.row(0, named=True)["score"] == pytest.approx(2.0)
    assert on_a.table.row(1, named=True)["val_srcc"] == pytest.approx(-1.0)


def test_only_calib_val_images_count():
    # The calib_train images (and any other labelled image) would favour epoch 2; they are not looked at.
    train = [f"b{i}" for i in range(5)]
    chosen = select_on_calib_val(PREDS, subset([f"a{i}" for i in range(5)], train_ids=train), teacher_epoch=3)
    assert chosen.epoch == 1
    # Predictions of images outside the subset (other splits included) change nothing either.
    extra = epoch_predictions({e: {"test0": 100.0 * e, "test1": -5.0 * e} for e in (1, 2, 3)})
    again = select_on_calib_val(pl.concat([PREDS, extra]), subset([f"a{i}" for i in range(5)]), teacher_epoch=3)
    assert again.table.equals(chosen.table)


def test_an_affine_map_of_an_epoch_changes_nothing():
    scaled = PREDS.with_columns(prediction=pl.col("prediction") * 20.0 + 7.0)
    ids = [f"a{i}" for i in range(5)] + ["b0", "b1"]
    assert_frame_equal(
        select_on_calib_val(scaled, subset(ids), 3).table,
        select_on_calib_val(PREDS, subset(ids), 3).table,
        rel_tol=1e-12,
    )


def test_ties_keep_the_earliest_epoch_and_constant_outputs_are_never_chosen():
    flat = {i: 3.0 for i in MOS}
    preds = epoch_predictions({1: flat, 2: A_RIGHT, 3: A_RIGHT})
    chosen = select_on_calib_val(preds, subset([f"a{i}" for i in range(5)]), teacher_epoch=1)
    assert chosen.epoch == 2
    assert chosen.table.row(0, named=True)["score"] is None  # undefined on constant outputs


def test_subset_that_cannot_rank_epochs_falls_back_to_the_teacher_rule_and_says_why():
    too_few = select_on_calib_val(PREDS, subset(["a0", "a4"]), teacher_epoch=3)
    assert (too_few.epoch, too_few.rule) == (3, "teacher")
    assert "2 calib_val image(s)" in too_few.reason
    assert too_few.table.filter("selected")["epoch"].to_list() == [3]
    flat = epoch_predictions({1: {i: 1.0 for i in MOS}, 2: {i: 2.0 for i in MOS}})
    undefined = select_on_calib_val(flat, subset(["a0", "a1", "a2"]), teacher_epoch=2)
    assert (undefined.epoch, undefined.rule) == (2, "teacher") and "no candidate epoch" in undefined.reason


def test_a_calib_val_image_without_prediction_is_an_error_naming_it():
    preds = PREDS.filter(~((pl.col("epoch") == 2) & (pl.col("image_id") == "a3")))
    with pytest.raises(InputError, match=r"epoch 2 .* \(first: 'a3'\)"):
        select_on_calib_val(preds, subset([f"a{i}" for i in range(5)]), 1, source="ep.parquet")


def test_duplicate_epoch_predictions_are_an_error():
    with pytest.raises(InputError, match=r"'a1' has more than one prediction at epoch 3"):
        select_on_calib_val(
            pl.concat([PREDS, PREDS.filter((pl.col("epoch") == 3) & (pl.col("image_id") == "a1"))]),
            subset([f"a{i}" for i in range(5)]),
            1,
        )


def test_select_stage1_step_writes_the_choice_and_its_provenance(tmp_path):
    write_parquet(PREDS, tmp_path / "ep.parquet", {"step": "test"})
    losses = pl.DataFrame({"epoch": [1, 2, 3], "selected": [False, False, True]})
    losses.write_parquet(tmp_path / "losses.parquet")
    for name, ids, expected in (("a", [f"a{i}" for i in range(5)], 1), ("b", [f"b{i}" for i in range(5)], 2)):
        sub = subset(ids)
        sub.write_parquet(tmp_path / f"{name}.parquet")
        out = tmp_path / f"sel_{name}.parquet"
        select_stage1.main(
            [
                "--epoch-predictions",
                str(tmp_path / "ep.parquet"),
                "--stage1-losses",
                str(tmp_path / "losses.parquet"),
                "--subset",
                str(tmp_path / f"{name}.parquet"),
                "--out",
                str(out),
            ]
        )
        table, prov = pl.read_parquet(out), read_provenance(out)
        assert table.filter("selected")["epoch"].to_list() == [expected]
        assert prov["selected_epoch"] == expected and prov["rule"] == "mos_subset" and prov["teacher_epoch"] == 3
        assert prov["calib_val_hash"] == calib_val_hash(sub)


def test_find_epoch_checkpoint_by_recorded_epoch():
    found = [("e1.safetensors", 1), ("e3.safetensors", 3), ("model.safetensors", 2)]
    assert find_epoch_checkpoint(found, 2) == "model.safetensors"
    with pytest.raises(InputError, match=r"epoch 4 .*epochs kept: \[1, 2, 3\]"):
        find_epoch_checkpoint(found, 4)
