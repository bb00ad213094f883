"""Oracles for what picks the teacher rule's stage-1 epoch (leaf_steps.distill): the held-out images
(holdout_count, holdout_ids) and the held-out distillation loss each epoch is scored by (val_terms,
Eq 6, 8, 9), recomputed by hand with numpy from the paper's formulas on a small table."""

import numpy as np
import polars as pl
import pytest
from scipy import stats

from leaf_steps import distill
from leaf_steps.training import holdout

STUDENT = {"model": "resnet10t", "pretrained": False, "resize": 40, "crop": 32, "num_workers": 0, "amp": False}
LAMBDA = 0.7


def cfg(**flags):
    return distill.DistillSettings.parse(
        {
            "student": STUDENT,
            "distill": {"lambda_dis": LAMBDA},
            "device": "cpu",
            "student_model": None,
            "seed": 0,
            **flags,
        }
    )


SCORES = {"a": 4.2, "b": 1.0, "c": 3.5, "d": 2.9, "e": 0.2}
POINTS = pl.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "teacher_score": [4.0, 2.5, 3.0, 3.1, 1.0]})
PAIRS = pl.DataFrame(
    {
        "a_id": ["a", "b", "c", "e"],
        "b_id": ["b", "c", "d", "a"],
        "t_ab": [1.0, 0.0, 1.0, 1.0],
        "confidence": [0.9, 0.5, 0.2, 1.0],
    }
)


def smooth_l1(d: np.ndarray) -> np.ndarray:  # beta = 1 (Eq 6)
    return np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5)


def bce(x: np.ndarray, t: np.ndarray) -> np.ndarray:  # -log P of the label, P = sigmoid(s_a - s_b) (Eq 7-8)
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def by_hand():
    s = np.array([SCORES[i] for i in POINTS["image_id"]])
    y = POINTS["teacher_score"].to_numpy()
    reg = smooth_l1(s - y).mean()
    x = np.array([SCORES[a] - SCORES[b] for a, b in zip(PAIRS["a_id"], PAIRS["b_id"], strict=True)])
    per_pair = bce(x, PAIRS["t_ab"].to_numpy())
    return reg, (PAIRS["confidence"].to_numpy() * per_pair).mean(), per_pair.mean(), stats.spearmanr(s, y).statistic


def test_val_terms_are_eq_6_8_9_on_the_held_out_data():
    reg, rank_weighted, rank_unweighted, srcc = by_hand()
    assert reg == pytest.approx((0.5 * 0.04 + (1.5 - 0.5) + 0.5 * 0.25 + 0.5 * 0.04 + 0.5 * 0.64) / 5)  # by hand
    full = distill.val_terms(SCORES, POINTS, PAIRS, cfg())
    assert full["val_reg"] == pytest.approx(reg, rel=1e-6)
    assert full["val_rank"] == pytest.approx(rank_weighted, rel=1e-6)
    assert full["val_loss"] == pytest.approx(reg + LAMBDA * rank_weighted, rel=1e-6)
    assert full["val_teacher_srcc"] == pytest.approx(srcc, rel=1e-6)
    # The ablations score epochs by what they train on.
    unweighted = distill.val_terms(SCORES, POINTS, PAIRS, cfg(use_confidence=False))
    assert unweighted["val_rank"] == pytest.approx(rank_unweighted, rel=1e-6)
    assert unweighted["val_loss"] == pytest.approx(reg + LAMBDA * rank_unweighted, rel=1e-6)
    assert distill.val_terms(SCORES, POINTS, PAIRS, cfg(use_pair=False))["val_loss"] == pytest.approx(reg, rel=1e-6)
    pair_only = distill.val_terms(SCORES, POINTS, PAIRS, cfg(use_point=False))
    assert pair_only["val_loss"] == pytest.approx(LAMBDA * rank_weighted, rel=1e-6)
    assert pair_only["val_reg"] == pytest.approx(reg, rel=1e-6)  # still reported


def test_val_terms_without_held_out_pairs_or_points():
    reg = by_hand()[0]
    no_pairs = distill.val_terms(SCORES, POINTS, PAIRS.clear(), cfg())
    assert no_pairs["val_rank"] is None and no_pairs["val_loss"] == pytest.approx(reg, rel=1e-6)
    no_points = distill.val_terms(SCORES, POINTS.clear(), PAIRS, cfg())
    assert no_points["val_reg"] is None and no_points["val_teacher_srcc"] is None
    assert no_points["val_loss"] == pytest.approx(LAMBDA * by_hand()[1], rel=1e-6)
    nothing = distill.val_terms(SCORES, POINTS.clear(), PAIRS.clear(), cfg())
    assert nothing == {"val_loss": None, "val_reg": None, "val_rank": None, "val_teacher_srcc": None}


@pytest.mark.parametrize(
    "n,fraction,expected",
    [
        (0, 0.25, 0),
        (2, 0.9, 0),
        (3, 0.0, 0),
        (3, 0.01, 1),
        (3, 0.9, 1),
        (4, 0.25, 1),
        (10, 0.25, 2),
        (10, 0.26, 3),
        (10, 0.5, 5),
        (10, 0.95, 8),
        (100, 0.2, 20),
        (7, 0.5, 4),
    ],
)
def test_holdout_count_rounds_and_keeps_two_for_training(n, fraction, expected):
    # round(fraction * n), at least one when fraction > 0, at most n - 2; none below three candidates.
    # (10 * 0.25 = 2.5 rounds to even: 2; 7 * 0.5 = 3.5 rounds to 4.)
    assert holdout.holdout_count(n, fraction) == expected


def test_holdout_ids_are_a_seeded_subset_of_that_size_whatever_the_input_order():
    ids = [f"img{i:02d}" for i in range(20)]
    held = holdout.holdout_ids(ids, 0.25, seed=3)
    assert len(held) == 5 and held <= set(ids)
    assert holdout.holdout_ids(list(reversed(ids)), 0.25, seed=3) == held
    assert holdout.holdout_ids(ids, 0.25, seed=3) == held
    others = {frozenset(holdout.holdout_ids(ids, 0.25, seed=s)) for s in range(6)}
    assert len(others) > 1  # the seed decides which
    assert holdout.holdout_ids(ids, 0.0, seed=3) == set()
    one = holdout.holdout_ids(ids[:3], 0.01, seed=3)  # the smallest hold-out: one image of three
    assert len(one) == 1 and one <= set(ids[:3])
