"""Oracle for the few-shot stage-1 epoch choice (distill.selection: mos_subset; leaf_steps.training.selection
and the select_stage1 step): epoch predictions built so that the right epoch is known by construction,
and every criterion value of the selection table recomputed with scipy.

Construction, on the subset's calib_val images (MOS 10, 20, ..., 80):
  epoch 1: MOS with two pairs of images swapped      -> SRCC < 1, PLCC < 1
  epoch 2: the teacher rule's epoch, MOS reversed     -> SRCC = -1
  epoch 3: exp(MOS / 10), monotone but not linear      -> SRCC = 1, PLCC < 1
  epoch 4: 0.05 * MOS + 1 (teacher-score units)        -> SRCC = PLCC = 1: the one to pick
  epoch 5: 0.02 * MOS + 3, as good as epoch 4           -> a tie, which the earlier epoch wins
  epoch 6: constant outputs                            -> undefined, never preferred
The calib_train images are ordered the other way round at epoch 4 (and exactly right at epoch 2): a
choice that looked at them, or at any image other than calib_val, would not be epoch 4.
"""

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from leaf_steps import select_stage1
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_provenance, write_parquet
from leaf_steps.training.epochs import EPOCH_PREDICTION_SCHEMA
from leaf_steps.training.selection import (
    MIN_SELECTION_IMAGES,
    SELECTION_SCHEMA,
    calib_val_hash,
    correlation_score,
    select_on_calib_val,
)

VAL = {f"v{i}": 10.0 * (i + 1) for i in range(8)}
TRAIN = {f"t{i}": 15.0 + 10.0 * i for i in range(6)}
RIGHT_EPOCH, TEACHER_EPOCH = 4, 2


def val_outputs(epoch: int, mos: np.ndarray) -> np.ndarray:
    if epoch == 1:
        out = mos.copy()
        out[[0, 1]], out[[5, 6]] = out[[1, 0]], out[[6, 5]]
        return out
    return {2: -mos, 3: np.exp(mos / 10), 4: 0.05 * mos + 1, 5: 0.02 * mos + 3, 6: np.full_like(mos, 3.0)}[epoch]


def train_outputs(epoch: int, mos: np.ndarray) -> np.ndarray:
    return -mos if epoch == RIGHT_EPOCH else (mos if epoch == TEACHER_EPOCH else np.sin(mos))


def epoch_predictions() -> pl.DataFrame:
    rows = []
    for epoch in range(1, 7):
        for ids, outputs in ((VAL, val_outputs), (TRAIN, train_outputs)):
            preds = outputs(epoch, np.array(list(ids.values())))
            rows += [{"image_id": i, "epoch": epoch, "prediction": float(p)} for i, p in zip(ids, preds, strict=True)]
    # Outputs on images outside the subset (other training images, the test split): never looked at.
    rows += [
        {"image_id": f"test{k}", "epoch": e, "prediction": 100.0 * e * (k + 1)} for e in range(1, 7) for k in range(3)
    ]
    return pl.DataFrame(rows, schema=EPOCH_PREDICTION_SCHEMA).sample(fraction=1.0, shuffle=True, seed=0)


def subset_table(val_ids=tuple(VAL)) -> pl.DataFrame:
    rows = [{"image_id": i, "role": "calib_val", "mos": VAL[i]} for i in val_ids]
    rows += [{"image_id": i, "role": "calib_train", "mos": m} for i, m in TRAIN.items()]
    return pl.DataFrame(rows).reverse()  # row order carries no meaning


def test_the_epoch_known_by_construction_is_chosen_and_every_criterion_equals_scipys():
    choice = select_on_calib_val(epoch_predictions(), subset_table(), teacher_epoch=TEACHER_EPOCH)
    assert (choice.epoch, choice.rule, choice.reason) == (RIGHT_EPOCH, "mos_subset", None)
    table = choice.table.sort("epoch")
    assert table["epoch"].to_list() == [1, 2, 3, 4, 5, 6]
    assert table["selected"].to_list() == [e == RIGHT_EPOCH for e in range(1, 7)]
    assert table["n_images"].to_list() == [len(VAL)] * 6
    mos = np.array(list(VAL.values()))
    for row in table.filter(pl.col("epoch") < 6).iter_rows(named=True):
        x = val_outputs(row["epoch"], mos)
        srcc, plcc = stats.spearmanr(x, mos).statistic, stats.pearsonr(x, mos).statistic
        assert row["val_srcc"] == pytest.approx(srcc, abs=1e-12)
        assert row["val_plcc"] == pytest.approx(plcc, abs=1e-12)
        assert row["score"] == pytest.approx(srcc + plcc, abs=1e-12)
    scores = dict(zip(table["epoch"], table["score"], strict=True))
    # What the construction promises, by hand.
    assert scores[4] == pytest.approx(2.0, abs=1e-12) and scores[5] == pytest.approx(2.0, abs=1e-12)
    assert scores[2] == pytest.approx(-2.0, abs=1e-12)
    # Epoch 3 ranks perfectly (SRCC 1) but not linearly: SRCC alone would tie it with epoch 4 and pick it.
    assert table.filter(pl.col("epoch") == 3)["val_srcc"][0] == pytest.approx(1.0, abs=1e-12)
    assert scores[3] < 2.0 - 1e-3 and scores[1] < 2.0 - 1e-3
    assert scores[6] is None and table.filter(pl.col("epoch") == 6)["val_srcc"][0] is None


def test_too_few_calib_val_images_fall_back_to_the_teacher_rule_epoch():
    few = list(VAL)[: MIN_SELECTION_IMAGES - 1]
    choice = select_on_calib_val(epoch_predictions(), subset_table(few), teacher_epoch=TEACHER_EPOCH)
    assert (choice.epoch, choice.rule) == (TEACHER_EPOCH, "teacher")
    assert f"{len(few)} calib_val image(s)" in choice.reason
    assert choice.table.filter("selected")["epoch"].to_list() == [TEACHER_EPOCH]
    # The table still records each epoch's correlations on those images (defined, if uninformative, for two).
    mos = np.array([VAL[i] for i in few])
    for row in choice.table.filter(pl.col("epoch") < 6).iter_rows(named=True):
        x = val_outputs(row["epoch"], np.array(list(VAL.values())))[: len(few)]
        assert row["val_srcc"] == pytest.approx(stats.spearmanr(x, mos).statistic, abs=1e-12)
        assert row["val_plcc"] == pytest.approx(stats.pearsonr(x, mos).statistic, abs=1e-12)
    enough = list(VAL)[:MIN_SELECTION_IMAGES]
    assert select_on_calib_val(epoch_predictions(), subset_table(enough), TEACHER_EPOCH).rule == "mos_subset"


def test_select_stage1_step_reads_the_teacher_epoch_and_records_the_choice(tmp_path):
    write_parquet(epoch_predictions(), tmp_path / "ep.parquet", {"step": "test"})
    # The teacher rule's epoch comes from distill's losses table (its one selected row).
    pl.DataFrame({"epoch": list(range(1, 7)), "selected": [e == TEACHER_EPOCH for e in range(1, 7)]}).write_parquet(
        tmp_path / "losses.parquet"
    )
    for name, val_ids, epoch, rule in (
        ("full", tuple(VAL), RIGHT_EPOCH, "mos_subset"),
        ("few", tuple(VAL)[:2], TEACHER_EPOCH, "teacher"),
    ):
        sub = subset_table(val_ids)
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
        prov = read_provenance(out)
        assert (prov["selected_epoch"], prov["rule"], prov["teacher_epoch"]) == (epoch, rule, TEACHER_EPOCH)
        assert pl.read_parquet(out).filter("selected")["epoch"].to_list() == [epoch]
        assert prov["calib_val_hash"] == calib_val_hash(sub)
        assert (prov["reason"] is None) == (rule == "mos_subset")
    assert math.isfinite(pl.read_parquet(tmp_path / "sel_full.parquet")["score"].drop_nulls().max())


def test_fallback_reasons_errors_and_the_table_schema_say_exactly_what_happened():
    few = select_on_calib_val(epoch_predictions(), subset_table(list(VAL)[:2]), TEACHER_EPOCH)
    assert few.reason == "the subset has 2 calib_val image(s); at least 3 are needed to rank epochs"
    assert few.table.schema == pl.Schema(SELECTION_SCHEMA)
    # Constant MOS on calib_val: no correlation is defined for any epoch (None, not NaN), and the reason says so.
    flat = subset_table().with_columns(mos=pl.when(pl.col("role") == "calib_val").then(50.0).otherwise(pl.col("mos")))
    undefined = select_on_calib_val(epoch_predictions(), flat, TEACHER_EPOCH)
    assert undefined.table["val_srcc"].to_list() == [None] * 6 and undefined.table["val_plcc"].null_count() == 6
    assert undefined.reason == "no candidate epoch has defined SRCC/PLCC on calib_val (constant outputs or MOS)"
    # Errors name the source (by default: "epoch predictions") and what is wrong with it.
    with pytest.raises(InputError, match=r"^epoch predictions: no epochs$"):
        select_on_calib_val(epoch_predictions().clear(), subset_table(), TEACHER_EPOCH)
    gap = epoch_predictions().filter(~((pl.col("epoch") == 3) & (pl.col("image_id") == "v2")))
    with pytest.raises(
        InputError,
        match=r"^epoch predictions: epoch 3 has no finite prediction for 1 calib_val "
        r"image\(s\) of the MOS subset \(first: 'v2'\); the stage-1 epoch predictions must cover "
        r"every labelled training image$",
    ):
        select_on_calib_val(gap, subset_table(), TEACHER_EPOCH)


def test_the_criterion_is_srcc_plus_plcc_and_any_undefined_half_makes_it_never_preferred():
    assert correlation_score(0.25, 0.5) == 0.75 and correlation_score(-1.0, -1.0) == -2.0
    for srcc, plcc in ((None, 0.5), (0.5, None), (None, None), (math.nan, 0.5), (0.5, math.inf)):
        assert correlation_score(srcc, plcc) == -math.inf, (srcc, plcc)


def test_a_duplicate_prediction_is_named_by_its_own_image_and_epoch():
    preds = epoch_predictions()
    twice = pl.concat(
        [
            preds.filter((pl.col("epoch") == 3) & (pl.col("image_id") == "v1")),
            preds.filter((pl.col("epoch") == 4) & (pl.col("image_id") == "v5")),
        ]
    )
    # Interleaved: the first two duplicated rows belong to different (image, epoch) pairs.
    with pytest.raises(InputError, match=r"^epoch predictions: image_id 'v1' has more than one prediction at epoch 3$"):
        select_on_calib_val(pl.concat([twice, twice, preds]), subset_table(), TEACHER_EPOCH)
