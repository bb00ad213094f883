"""Eq 1-5 against values worked out by hand, and answer-token mapping."""

import math

import numpy as np
import pytest

from leaf_steps.teachers.teacher_math import (
    LEVELS,
    LabelScores,
    collapse_top_logprobs,
    expected_score,
    label_aliases,
    level_probabilities,
    pair_confidence,
    pair_probability,
    preference_label,
)


def test_eq1_softmax_by_hand():
    # l = (0, -1, -2, -3, -4): p_k = e^-k / (1 + e^-1 + e^-2 + e^-3 + e^-4) = e^-k / 1.5713171
    p = level_probabilities(np.array([0.0, -1.0, -2.0, -3.0, -4.0]))
    np.testing.assert_allclose(p, [0.6364086, 0.2341217, 0.0861285, 0.0316849, 0.0116562], atol=1e-6)
    # Shifting all log-likelihoods by a constant does not change Eq 1 (and huge values do not overflow).
    np.testing.assert_allclose(level_probabilities(np.array([1000.0, 999, 998, 997, 996])), p, atol=1e-12)


def test_eq2_expected_score_by_hand():
    assert expected_score(np.full(5, 0.2)) == pytest.approx(3.0)  # (5+4+3+2+1)/5
    assert expected_score(np.array([0.5, 0.5, 0, 0, 0])) == pytest.approx(4.5)  # Excellent/Good tie
    assert expected_score(np.array([0, 0, 0, 0, 1.0])) == pytest.approx(1.0)  # certain "Bad"
    # 5*.6364086 + 4*.2341217 + 3*.0861285 + 2*.0316849 + 1*.0116562
    #   = 3.1820430 + .9364868 + .2583855 + .0633698 + .0116562 = 4.4519413
    p = level_probabilities(np.array([0.0, -1.0, -2.0, -3.0, -4.0]))
    assert expected_score(p) == pytest.approx(4.4519413, abs=1e-6)
    # Batched: one score per row.
    assert expected_score(np.array([[0.2] * 5, [1, 0, 0, 0, 0]])).tolist() == pytest.approx([3.0, 5.0])


def test_eq3_pair_probability_by_hand():
    # l_A = log .6, l_B = log .2 -> p_A = .6 / (.6 + .2) = .75
    assert pair_probability(math.log(0.6), math.log(0.2)) == pytest.approx(0.75)
    assert pair_probability(-3.0, -3.0) == pytest.approx(0.5)
    assert pair_probability(0.0, -800.0) == pytest.approx(1.0)  # no overflow


def test_eq4_hard_label_ties_go_to_a():
    assert preference_label(np.array([0.75, 0.5, 0.4999, 0.0])).tolist() == [1, 1, 0, 0]


def test_eq5_confidence_by_hand():
    # H(.75) = -(.75 ln .75 + .25 ln .25) = .2157616 + .3465736 = .5623351; / ln 2 = .8112781
    assert pair_confidence(0.75) == pytest.approx(1 - 0.8112781, abs=1e-6)
    # H(.9) = .3250830; / ln 2 = .4689956
    assert pair_confidence(0.9) == pytest.approx(0.5310044, abs=1e-6)
    assert pair_confidence(0.1) == pytest.approx(pair_confidence(0.9))  # symmetric
    assert pair_confidence(0.5) == pytest.approx(0.0)  # a coin flip carries no confidence
    assert pair_confidence(1.0) == pytest.approx(1.0) and pair_confidence(0.0) == pytest.approx(1.0)


def test_token_variants_summed_and_missing_listed():
    top = [
        (" Good", math.log(0.4)),
        ("good", math.log(0.1)),
        ("Fair", math.log(0.2)),
        ("\u2581Excellent", math.log(0.05)),
        ("the", math.log(0.1)),
    ]
    s = collapse_top_logprobs(top, LEVELS)
    assert s.error is None
    assert s.logliks[1] == pytest.approx(math.log(0.5))  # " Good" + "good"
    assert s.logliks[2] == pytest.approx(math.log(0.2))
    assert s.logliks[0] == pytest.approx(math.log(0.05))
    assert s.missing == ["Poor", "Bad"]
    # "floor": a missing label gets the smallest returned logprob, an upper bound on its true value.
    assert s.logliks[3] == pytest.approx(math.log(0.05)) and s.logliks[4] == pytest.approx(math.log(0.05))
    assert s.mass == pytest.approx(0.75)
    zero = collapse_top_logprobs(top, LEVELS, missing_policy="zero")
    assert zero.logliks[3] == -math.inf
    assert level_probabilities(np.array(zero.logliks))[3] == 0.0


def test_first_subtoken_aliases_and_ambiguity():
    aliases = label_aliases(LEVELS, {"Excellent": ["Excel"]})
    s = collapse_top_logprobs([("Excel", math.log(0.3)), ("Good", math.log(0.3))], LEVELS, aliases)
    assert s.logliks[0] == pytest.approx(math.log(0.3))
    with pytest.raises(ValueError, match="ambiguous"):
        label_aliases(["A", "B"], {"A": ["x"], "B": ["X"]})


def test_no_expected_token_is_an_error_row():
    s = collapse_top_logprobs([("the", -0.1), ("image", -2.0)], ["A", "B"])
    assert s.error is not None and s.missing == ["A", "B"] and all(math.isnan(x) for x in s.logliks)


def test_eq4_labels_are_int8_and_failed_rows_carry_nan_mass():
    assert preference_label(np.array([0.2, 0.5, 0.9])).dtype == np.int8
    failed = LabelScores.failed(LEVELS, "x.png: cannot read image")
    assert math.isnan(failed.mass) and failed.missing == list(LEVELS) and failed.error == "x.png: cannot read image"


def test_given_aliases_are_used_and_blank_sub_tokens_are_skipped():
    # A first sub-token that normalises to nothing (a bare space marker) says nothing; the next one counts.
    aliases = label_aliases(LEVELS, {"Excellent": ["\u2581", "Excel"]})
    assert aliases["excel"] == "Excellent" and "" not in aliases
    # "Excel" is recognised only through the aliases passed in (it is the only candidate, so no floor can mask it).
    s = collapse_top_logprobs([("Excel", math.log(0.3))], LEVELS, aliases, missing_policy="zero")
    assert s.logliks[0] == pytest.approx(math.log(0.3)) and s.missing == ["Good", "Fair", "Poor", "Bad"]
    assert collapse_top_logprobs([("Excel", math.log(0.3))], LEVELS).error is not None  # default aliases


def test_non_finite_and_missing_logprobs_are_skipped_not_fatal():
    top = [("Bad", -math.inf), ("Good", None), ("Fair", math.nan), ("Good", math.log(0.25)), ("Poor", math.log(0.5))]
    s = collapse_top_logprobs(top, LEVELS, missing_policy="zero")
    assert s.error is None and s.missing == ["Excellent", "Fair", "Bad"]
    assert s.logliks[1:5:2] == pytest.approx([math.log(0.25), math.log(0.5)])
    assert s.mass == pytest.approx(0.75)
    floor = collapse_top_logprobs(top, LEVELS)  # the floor is the smallest FINITE logprob returned
    assert floor.logliks[0] == floor.logliks[4] == pytest.approx(math.log(0.25))


def test_bad_policy_and_no_match_messages():
    with pytest.raises(ValueError, match="missing_policy must be 'floor' or 'zero', got 'drop'"):
        collapse_top_logprobs([("Good", -0.1)], LEVELS, missing_policy="drop")
    s = collapse_top_logprobs([("the", -0.1)], ["A", "B"])
    assert s.error == (
        "the teacher did not answer with a label: none of the labels among the 1 returned top tokens "
        "(top tokens: 'the' 0.905)"
    )


def test_every_label_seen_gives_each_its_own_loglik():
    top = [(label, math.log(p)) for label, p in zip(LEVELS, (0.05, 0.1, 0.2, 0.3, 0.35))]
    s = collapse_top_logprobs(top, LEVELS)
    assert s.missing == [] and s.logliks == pytest.approx([math.log(p) for p in (0.05, 0.1, 0.2, 0.3, 0.35)])


def test_eq1_each_row_is_shifted_by_its_own_maximum():
    # Rows 1000 apart: shifting by one maximum for the whole batch would underflow the second row to 0/0.
    logits = np.array([[1000.0, 999.0, 998.0, 997.0, 996.0], [0.0, -1.0, -2.0, -3.0, -4.0]])
    p = level_probabilities(logits)
    np.testing.assert_allclose(p[0], p[1], rtol=1e-12)
    assert np.isfinite(p).all()


def test_eq1_and_eq5_compute_in_float64_whatever_the_input():
    logits32 = np.array([0.3, -1.7, -2.2, -0.4, -5.1], dtype=np.float32)
    p = level_probabilities(logits32)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, level_probabilities(logits32.astype(np.float64)), rtol=1e-15)
    w = pair_confidence(np.array([0.7, 0.93], dtype=np.float32))
    assert w.dtype == np.float64
    np.testing.assert_allclose(
        w, pair_confidence(np.array([0.7, 0.93], dtype=np.float32).astype(np.float64)), rtol=1e-15
    )


def test_eq5_certain_answers_raise_no_warnings_and_rounding_never_goes_below_zero():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 log 0 := 0 without divide-by-zero or 0 * inf warnings
        assert pair_confidence(np.array([0.0, 1.0])).tolist() == [1.0, 1.0]
    # Here H(p)/log 2 rounds to 1 + 2e-16: the confidence is clipped to 0, never negative.
    assert pair_confidence(np.array([0.49999999999988914])).tolist() == [0.0]
