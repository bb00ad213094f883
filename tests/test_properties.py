"""Property-based tests (hypothesis) for the teacher's equations (Eq 1-5) and the student's losses
(Eq 6-12): invariants that must hold for every input, each checked against an oracle that does
not share code with the implementation (scipy, the closed forms, finite differences).

Hypothesis runs without an example database (see conftest.py), so nothing is written into the
checkout and a failure prints the falsifying example to reproduce it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.special import expit, log_softmax

from leaf_steps.teachers import teacher_math as tm
from leaf_steps.training import losses

VALUES = np.array(tm.LEVEL_VALUES)

# Log-likelihoods as a model returns them: finite, within a range where float64 keeps every
# probability distinguishable from its neighbours.
logit = st.floats(min_value=-40.0, max_value=40.0, allow_nan=False, allow_infinity=False)
five_logits = hnp.arrays(np.float64, 5, elements=logit)
batch_of_five = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6).map(lambda s: (s[0], 5)),
    elements=logit,
)
probability = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
score = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, allow_infinity=False, width=32)


def vectors(n_min: int = 2, n_max: int = 12, elements=score):
    return st.integers(n_min, n_max).flatmap(lambda n: hnp.arrays(np.float32, n, elements=elements))


def grad_of(fn, *tensors: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().double().requires_grad_(True) for t in tensors]
    fn(*leaves).backward()
    return [leaf.grad for leaf in leaves]


# --------------------------------------------------------------------------- Eq 1-2: point-wise


@given(batch_of_five)
def test_eq1_probabilities_are_a_distribution_equal_to_scipy(logits):
    p = tm.level_probabilities(logits)
    assert p.shape == logits.shape
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p, np.exp(log_softmax(logits, axis=-1)), rtol=1e-9, atol=1e-300)


@given(five_logits, st.floats(min_value=-1e3, max_value=1e3))
def test_eq1_is_unchanged_by_a_common_shift(logits, shift):
    np.testing.assert_allclose(
        tm.level_probabilities(logits + shift), tm.level_probabilities(logits), rtol=1e-9, atol=1e-12
    )


@given(five_logits)
def test_eq2_score_lies_in_1_to_5_and_is_the_mean_level(logits):
    p = tm.level_probabilities(logits)
    s = float(tm.expected_score(p))
    assert 1.0 - 1e-12 <= s <= 5.0 + 1e-12
    assert s == pytest.approx(sum(v * pk for v, pk in zip((5, 4, 3, 2, 1), p)), abs=1e-12)


@given(five_logits, st.integers(0, 4), st.floats(min_value=1e-3, max_value=30.0))
def test_eq2_raising_one_level_moves_the_score_towards_that_level(logits, k, delta):
    """dS/dl_k = p_k (v_k - S): a larger logit for level k pulls the score towards v_k, never past it.
    For Excellent (v=5) that is monotone increasing, for Bad (v=1) decreasing."""
    before = float(tm.expected_score(tm.level_probabilities(logits)))
    raised = logits.copy()
    raised[k] += delta
    after = float(tm.expected_score(tm.level_probabilities(raised)))
    v = VALUES[k]
    assert (after - before) * (v - before) >= -1e-12
    assert abs(after - v) <= abs(before - v) + 1e-12
    if k == 0:
        assert after >= before - 1e-12
    if k == 4:
        assert after <= before + 1e-12


@given(five_logits)
def test_eq2_reversing_the_levels_mirrors_the_score(logits):
    # Swapping Excellent<->Bad and Good<->Poor maps v to 6 - v, hence S to 6 - S.
    s = float(tm.expected_score(tm.level_probabilities(logits)))
    mirrored = float(tm.expected_score(tm.level_probabilities(logits[::-1].copy())))
    assert mirrored == pytest.approx(6.0 - s, abs=1e-9)


# --------------------------------------------------------------------------- Eq 3-5: pair-wise


@given(logit, logit)
def test_eq3_is_the_two_way_softmax_and_antisymmetric(la, lb):
    p = float(tm.pair_probability(la, lb))
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(float(expit(la - lb)), abs=1e-12)
    assert p + float(tm.pair_probability(lb, la)) == pytest.approx(1.0, abs=1e-12)  # A/B swap


@given(logit, logit, st.floats(min_value=1e-6, max_value=10.0))
def test_eq3_grows_with_the_a_log_likelihood(la, lb, delta):
    assert float(tm.pair_probability(la + delta, lb)) >= float(tm.pair_probability(la, lb))


@given(logit, logit)
def test_eq4_label_agrees_with_the_probability_and_the_log_likelihoods(la, lb):
    p = tm.pair_probability(la, lb)
    t = int(tm.preference_label(p))
    assert t in (0, 1)
    assert t == int(p >= 0.5)
    if abs(la - lb) > 1e-12:  # below that, p_A is 1/2 to float64 precision and the tie rule applies
        assert t == int(la > lb)
    if la == lb:
        assert t == 1  # a tie goes to A (p_A >= p_B)


@given(probability)
def test_eq5_confidence_in_0_1_symmetric_under_swap_and_one_minus_binary_entropy(p):
    w = float(tm.pair_confidence(p))
    assert 0.0 <= w <= 1.0
    assert w == pytest.approx(float(tm.pair_confidence(1.0 - p)), abs=1e-12)  # A/B swap
    assert w == pytest.approx(1.0 - stats.entropy([p, 1.0 - p], base=2), abs=1e-9)


@given(probability, probability)
def test_eq5_confidence_grows_with_the_distance_from_a_coin_flip(p, q):
    assume(abs(abs(p - 0.5) - abs(q - 0.5)) > 1e-9)
    near, far = sorted((p, q), key=lambda x: abs(x - 0.5))
    assert float(tm.pair_confidence(far)) >= float(tm.pair_confidence(near)) - 1e-12


@given(logit, logit)
def test_eq3_to_5_swapping_the_shown_order_flips_the_label_keeps_the_confidence(la, lb):
    assume(abs(la - lb) > 1e-6)
    p, p_swapped = tm.pair_probability(la, lb), tm.pair_probability(lb, la)
    assert int(tm.preference_label(p)) + int(tm.preference_label(p_swapped)) == 1
    assert float(tm.pair_confidence(p)) == pytest.approx(float(tm.pair_confidence(p_swapped)), abs=1e-12)


# --------------------------------------------------------------------------- token collapse

token_logprob = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False)


@given(
    st.lists(
        st.tuples(st.sampled_from(["Good", " good", "GOOD", "Bad", " bad", "Fair", "x", "Okay"]), token_logprob),
        min_size=1,
        max_size=12,
    )
)
def test_collapse_sums_variants_in_probability_space(top):
    labels = ("Good", "Fair", "Bad")
    got = tm.collapse_top_logprobs(top, labels, missing_policy="zero")
    sums = {label: 0.0 for label in labels}
    for token, lp in top:
        key = token.strip().lower()
        for label in labels:
            if key == label.lower():
                sums[label] += math.exp(lp)
    if not any(sums.values()):
        assert got.error is not None and all(math.isnan(x) for x in got.logliks)
        return
    assert got.error is None
    assert got.missing == [label for label in labels if sums[label] == 0.0]
    assert got.mass == pytest.approx(sum(sums.values()), rel=1e-12)
    for label, ll in zip(labels, got.logliks):
        if sums[label]:
            assert ll == pytest.approx(math.log(sums[label]), rel=1e-12, abs=1e-12)
        else:
            assert ll == -math.inf


# --------------------------------------------------------------------------- Eq 6: SmoothL1


@given(vectors())
def test_eq6_point_loss_is_zero_at_the_teacher_and_positive_elsewhere(s):
    t = torch.from_numpy(s)
    assert float(losses.point_loss(t, t)) == 0.0
    shifted = t + 0.5
    assert float(losses.point_loss(shifted, t)) > 0.0


@given(vectors(), vectors())
def test_eq6_point_loss_matches_the_closed_form_and_its_gradient_points_to_the_teacher(s, y):
    n = min(len(s), len(y))
    s, y = s[:n].astype(np.float64), y[:n].astype(np.float64)
    d = s - y
    want = np.mean(np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5))
    assert float(losses.point_loss(torch.from_numpy(s), torch.from_numpy(y))) == pytest.approx(want, rel=1e-5, abs=1e-6)
    (g,) = grad_of(lambda a: losses.point_loss(a, torch.from_numpy(y)), torch.from_numpy(s))
    g = g.numpy()
    # Descending the gradient moves every score towards its teacher score.
    assert np.all(np.sign(g[np.abs(d) > 1e-3]) == np.sign(d[np.abs(d) > 1e-3]))


# --------------------------------------------------------------------------- Eq 7-9: pair BCE

pair_batch = st.integers(1, 10).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, n, elements=st.floats(-10, 10)),
        hnp.arrays(np.float64, n, elements=st.floats(-10, 10)),
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])),
        hnp.arrays(np.float64, n, elements=st.floats(0.0, 1.0)),
    )
)


def bce_oracle(sa, sb, t, w):
    d = sa - sb
    # log sigmoid(d) = -logaddexp(0, -d); log(1 - sigmoid(d)) = -logaddexp(0, d)
    return float(np.mean(w * (t * np.logaddexp(0, -d) + (1 - t) * np.logaddexp(0, d))))


@given(pair_batch)
def test_eq8_rank_loss_matches_weighted_bce(batch):
    sa, sb, t, w = batch
    got = losses.rank_loss(*(torch.from_numpy(x) for x in (sa, sb, t, w)))
    assert float(got) == pytest.approx(bce_oracle(sa, sb, t, w), rel=1e-5, abs=1e-6)
    unweighted = losses.rank_loss(*(torch.from_numpy(x) for x in (sa, sb, t)))
    assert float(unweighted) == pytest.approx(bce_oracle(sa, sb, t, np.ones_like(w)), rel=1e-5, abs=1e-6)


@given(pair_batch)
def test_eq8_swapping_a_and_b_with_the_label_leaves_the_loss_unchanged(batch):
    sa, sb, t, w = (torch.from_numpy(x) for x in batch)
    assert float(losses.rank_loss(sb, sa, 1 - t, w)) == pytest.approx(
        float(losses.rank_loss(sa, sb, t, w)), rel=1e-5, abs=1e-6
    )


@given(pair_batch)
def test_eq8_gradient_raises_the_preferred_image_and_lowers_the_other(batch):
    sa, sb, t, w = batch
    ga, gb = grad_of(
        lambda a, b: losses.rank_loss(a, b, torch.from_numpy(t), torch.from_numpy(w)),
        torch.from_numpy(sa),
        torch.from_numpy(sb),
    )
    ga, gb = ga.numpy(), gb.numpy()
    np.testing.assert_allclose(ga, -gb, atol=1e-12)  # only the difference s_a - s_b matters
    # t = 1 (a preferred): gradient descent raises s_a; t = 0: lowers it. Strictly so wherever the
    # pair has weight and float32's sigmoid has not saturated (|s_a - s_b| < 12).
    weighted, open_ = w > 1e-6, np.abs(sa - sb) < 12
    assert np.all(ga[t == 1] <= 0) and np.all(ga[t == 0] >= 0)
    assert np.all(ga[weighted & open_ & (t == 1)] < 0) and np.all(ga[weighted & open_ & (t == 0)] > 0)
    np.testing.assert_allclose(ga[~weighted], 0.0, atol=1e-6)


@given(pair_batch, st.floats(min_value=0.01, max_value=3.0))
def test_eq8_is_linear_in_the_confidence_weights_and_falls_as_the_right_gap_grows(batch, k):
    sa, sb, t, w = (torch.from_numpy(x) for x in batch)
    base = float(losses.rank_loss(sa, sb, t, w))
    assert float(losses.rank_loss(sa, sb, t, k * w)) == pytest.approx(k * base, rel=1e-5, abs=1e-7)
    # Moving every pair further in the direction of its label lowers the loss.
    direction = 2 * t - 1
    assert float(losses.rank_loss(sa + direction, sb, t, w)) <= base + 1e-7


@given(pair_batch, vectors(2, 6), st.floats(min_value=0.0, max_value=2.0))
def test_eq9_is_the_sum_of_the_enabled_terms(batch, s, lam):
    sa, sb, t, w = (torch.from_numpy(x) for x in batch)
    scores = torch.from_numpy(s)
    teacher = scores.flip(0)
    reg = float(losses.point_loss(scores, teacher))
    rank = float(losses.rank_loss(sa, sb, t, w))
    both = losses.distill_loss(
        scores=scores, teacher_scores=teacher, s_a=sa, s_b=sb, t_ab=t, confidence=w, lambda_dis=lam
    )
    assert float(both.total) == pytest.approx(reg + lam * rank, rel=1e-5, abs=1e-6)
    point_only = losses.distill_loss(scores=scores, teacher_scores=teacher, lambda_dis=lam, use_pair=False)
    assert float(point_only.total) == pytest.approx(reg, rel=1e-6) and point_only.rank is None
    pair_only = losses.distill_loss(s_a=sa, s_b=sb, t_ab=t, confidence=w, lambda_dis=lam, use_point=False)
    assert float(pair_only.total) == pytest.approx(lam * rank, rel=1e-5, abs=1e-7) and pair_only.reg is None
    no_conf = losses.distill_loss(s_a=sa, s_b=sb, t_ab=t, lambda_dis=lam, use_point=False, use_confidence=False)
    assert float(no_conf.total) == pytest.approx(lam * float(losses.rank_loss(sa, sb, t)), rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------- Eq 10-12: calibration

spread = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False)


def varied(n_min: int = 3, n_max: int = 12):
    """Score vectors with a clear spread (so that Pearson's r is well conditioned in float32)."""
    return (
        st.integers(n_min, n_max)
        .flatmap(lambda n: hnp.arrays(np.float64, n, elements=spread))
        .filter(lambda v: np.std(v) > 1e-2 * (1 + np.abs(v).max()))
    )


@given(varied(), st.floats(min_value=1e-2, max_value=1e2), st.floats(min_value=-1e2, max_value=1e2))
def test_eq11_plcc_loss_is_invariant_to_positive_affine_maps_of_the_predictions(s, a, b):
    y = np.cos(np.arange(len(s)) * 1.7) * 10 + np.arange(len(s))  # any non-constant target
    base = float(losses.plcc_loss(torch.from_numpy(s), torch.from_numpy(y)))
    mapped = float(losses.plcc_loss(torch.from_numpy(a * s + b), torch.from_numpy(y)))
    assert mapped == pytest.approx(base, abs=1e-4)
    flipped = float(losses.plcc_loss(torch.from_numpy(-a * s + b), torch.from_numpy(y)))
    assert flipped == pytest.approx(2.0 - base, abs=1e-4)  # a negative slope flips rho


@given(varied().flatmap(lambda y: st.tuples(varied(len(y), len(y)), st.just(y))))
def test_eq11_rho_matches_scipy_and_lies_in_minus_1_1(sy):
    s, y = sy
    rho = float(losses.pearson(torch.from_numpy(s), torch.from_numpy(y)))
    assert -1.0 - 1e-5 <= rho <= 1.0 + 1e-5
    assert rho == pytest.approx(stats.pearsonr(s, y).statistic, abs=1e-4)


@given(varied(), st.floats(min_value=1e-2, max_value=1e2), st.floats(min_value=-1e2, max_value=1e2))
def test_eq11_is_zero_at_a_perfect_linear_fit(y, a, b):
    # float32 scores: the spread a * y must stand well above the rounding of the offset b, or centring
    # a * y + b loses the digits that carry the correlation (y = [1/16, 0, 0], a = 1/64, b = 64 did).
    assume(a * np.ptp(y) > 1e-3 * (abs(b) + 1))
    assert float(losses.plcc_loss(torch.from_numpy(a * y + b), torch.from_numpy(y))) == pytest.approx(0.0, abs=1e-5)


@given(varied())
def test_eq10_mse_is_zero_at_the_targets_and_its_gradient_points_to_them(y):
    t = torch.from_numpy(y)
    assert float(losses.mse_loss(t, t)) == 0.0
    s = y + np.where(np.arange(len(y)) % 2 == 0, 1.5, -0.75)
    assert float(losses.mse_loss(torch.from_numpy(s), t)) == pytest.approx(np.mean((s - y) ** 2), rel=1e-5)
    (g,) = grad_of(lambda a: losses.mse_loss(a, t), torch.from_numpy(s))
    np.testing.assert_allclose(g.numpy(), 2 * (s - y) / len(y), rtol=1e-5)


@given(
    varied().flatmap(lambda y: st.tuples(hnp.arrays(np.float64, len(y), elements=spread), st.just(y))),
    st.floats(min_value=0.0, max_value=3.0),
)
def test_eq12_is_mse_plus_lambda_plcc_and_zero_at_the_targets(sy, lam):
    s, y = (torch.from_numpy(v) for v in sy)
    terms = losses.calibration_loss(s, y, lam)
    assert float(terms.total) == pytest.approx(
        float(losses.mse_loss(s, y)) + lam * float(losses.plcc_loss(s, y)), rel=1e-5, abs=1e-6
    )
    assert float(terms.mse) == pytest.approx(float(losses.mse_loss(s, y)), rel=1e-6)
    assert float(terms.plcc) == pytest.approx(float(losses.plcc_loss(s, y)), rel=1e-6)
    at_target = losses.calibration_loss(y, y, lam)
    assert float(at_target.total) == pytest.approx(0.0, abs=1e-5)


@given(varied())
def test_eq11_gradient_of_a_constant_batch_is_finite(y):
    constant = torch.full((len(y),), 3.0, dtype=torch.float64)
    (g,) = grad_of(lambda a: losses.plcc_loss(a, torch.from_numpy(y)), constant)
    assert torch.isfinite(g).all()
    assert float(losses.plcc_loss(constant, torch.from_numpy(y))) == pytest.approx(1.0)
