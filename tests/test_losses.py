"""Eq 6-12 against values worked out by hand on small vectors, plus gradient flow."""

import math
import re

import pytest
import torch

from leaf_steps.training import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_point_loss_eq6_smooth_l1_by_hand():
    # |d| = 0.5 -> 0.5 * 0.5^2 = 0.125 (quadratic zone); |d| = 2 -> 2 - 0.5 = 1.5 (linear zone); d = 0 -> 0
    got = losses.point_loss(t(1.0, 2.0, 4.5), t(1.5, 4.0, 4.5))
    assert got.item() == pytest.approx((0.125 + 1.5 + 0.0) / 3, abs=1e-6)


def test_pair_probability_eq7():
    got = losses.pair_probability(t(2.0, 0.0), t(0.0, math.log(3.0)))
    # sigmoid(2) = 1 / (1 + e^-2); sigmoid(-ln 3) = 1 / (1 + 3) = 0.25
    assert got[0].item() == pytest.approx(1.0 / (1.0 + math.exp(-2.0)), abs=1e-6)
    assert got[1].item() == pytest.approx(0.25, abs=1e-6)


def test_rank_loss_eq8_confidence_weighted_by_hand():
    ln3 = math.log(3.0)
    s_a, s_b = t(ln3, 0.0, 1.0), t(0.0, ln3, 1.0)  # differences ln3, -ln3, 0 -> P = 0.75, 0.25, 0.5
    t_ab = torch.tensor([1, 1, 0], dtype=torch.int8)
    w = t(1.0, 0.5, 0.2)
    expected_weighted = (-math.log(0.75) * 1.0 - math.log(0.25) * 0.5 - math.log(0.5) * 0.2) / 3
    expected_unit = (-math.log(0.75) - math.log(0.25) - math.log(0.5)) / 3
    assert losses.rank_loss(s_a, s_b, t_ab, w).item() == pytest.approx(expected_weighted, abs=1e-6)
    assert losses.rank_loss(s_a, s_b, t_ab, None).item() == pytest.approx(expected_unit, abs=1e-6)


def test_rank_loss_stays_finite_for_large_score_gaps():
    # Teacher says b is better (t = 0) but the student is 200 logits the other way:
    # BCE = -log(1 - sigmoid(200)) = 200 exactly in exact arithmetic; a naive log(sigmoid) saturates.
    got = losses.rank_loss(t(200.0), t(0.0), t(0.0))
    assert got.item() == pytest.approx(200.0, rel=1e-5)


def test_distill_loss_eq9_and_switches():
    scores, teacher = t(1.0, 2.0, 4.5), t(1.5, 4.0, 4.5)
    ln3 = math.log(3.0)
    s_a, s_b, t_ab, w = t(ln3, 0.0), t(0.0, ln3), t(1.0, 1.0), t(1.0, 0.5)
    reg = (0.125 + 1.5) / 3
    rank_w = (-math.log(0.75) - 0.5 * math.log(0.25)) / 2
    rank_1 = (-math.log(0.75) - math.log(0.25)) / 2
    kw = dict(scores=scores, teacher_scores=teacher, s_a=s_a, s_b=s_b, t_ab=t_ab, confidence=w, lambda_dis=0.5)

    full = losses.distill_loss(**kw)
    assert full.total.item() == pytest.approx(reg + 0.5 * rank_w, abs=1e-6)
    assert full.reg.item() == pytest.approx(reg, abs=1e-6)
    assert full.rank.item() == pytest.approx(rank_w, abs=1e-6)

    point_only = losses.distill_loss(**kw, use_pair=False)
    assert point_only.total.item() == pytest.approx(reg, abs=1e-6) and point_only.rank is None

    pair_only = losses.distill_loss(**kw, use_point=False)
    assert pair_only.total.item() == pytest.approx(0.5 * rank_w, abs=1e-6) and pair_only.reg is None

    unit = losses.distill_loss(**kw, use_confidence=False)
    assert unit.total.item() == pytest.approx(reg + 0.5 * rank_1, abs=1e-6)

    with pytest.raises(ValueError):
        losses.distill_loss(**kw, use_point=False, use_pair=False)


def test_mse_loss_eq10():
    # squared errors 1, 0, 4
    assert losses.mse_loss(t(1.0, 2.0, 3.0), t(2.0, 2.0, 5.0)).item() == pytest.approx(5.0 / 3, abs=1e-6)


def test_plcc_loss_eq11_by_hand():
    # s centred: (-1, 0, 1); y = (2, 4, 7), mean 13/3, centred (-7/3, -1/3, 8/3)
    # cov-sum = 7/3 + 8/3 = 5; sum s_c^2 = 2; sum y_c^2 = (49 + 1 + 64) / 9 = 114/9
    rho = 5.0 / math.sqrt(2.0 * 114.0 / 9.0)
    assert losses.plcc_loss(t(1.0, 2.0, 3.0), t(2.0, 4.0, 7.0)).item() == pytest.approx(1.0 - rho, abs=1e-6)
    # Pearson is invariant to affine maps of the scores with positive slope, and flips with a negative one
    assert losses.plcc_loss(t(10.0, 15.0, 20.0), t(2.0, 4.0, 7.0)).item() == pytest.approx(1.0 - rho, abs=1e-6)
    assert losses.plcc_loss(t(3.0, 2.0, 1.0), t(2.0, 4.0, 7.0)).item() == pytest.approx(1.0 + rho, abs=1e-6)


def test_plcc_loss_zero_variance_is_finite_with_finite_gradient():
    s = t(3.0, 3.0, 3.0).requires_grad_()
    loss = losses.plcc_loss(s, t(1.0, 2.0, 3.0))
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_calibration_loss_eq12():
    s, y = t(1.0, 2.0, 3.0), t(2.0, 4.0, 7.0)
    # squared errors 1, 4, 16
    mse = (1.0 + 4.0 + 16.0) / 3
    plcc = 1.0 - 5.0 / math.sqrt(2.0 * 114.0 / 9.0)
    terms = losses.calibration_loss(s, y, lambda_cal=0.3)
    assert terms.mse.item() == pytest.approx(mse, abs=1e-5)
    assert terms.plcc.item() == pytest.approx(plcc, abs=1e-6)
    assert terms.total.item() == pytest.approx(mse + 0.3 * plcc, abs=1e-5)


def _tiny_regressor():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


@pytest.mark.parametrize("name", ["point", "rank", "distill", "calibration"])
def test_gradients_flow_to_parameters(name):
    model = _tiny_regressor()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    s = model(x).squeeze(1)
    y = t(1.0, 2.0, 3.0, 4.0, 5.0, 2.5)
    if name == "point":
        loss = losses.point_loss(s, y)
    elif name == "rank":
        loss = losses.rank_loss(s[:3], s[3:], t(1.0, 0.0, 1.0), t(0.9, 0.4, 0.7))
    elif name == "distill":
        loss = losses.distill_loss(
            scores=s, teacher_scores=y, s_a=s[:3], s_b=s[3:], t_ab=t(1.0, 0.0, 1.0), confidence=t(0.9, 0.4, 0.7)
        ).total
    else:
        loss = losses.calibration_loss(s, y).total
    loss.backward()
    assert torch.isfinite(model.weight.grad).all() and model.weight.grad.abs().sum() > 0
    if name == "rank":
        # Eq 8 sees only score differences, so a common offset (the bias) gets no gradient
        assert model.bias.grad.abs().item() == pytest.approx(0.0, abs=1e-7)
    else:
        assert model.bias.grad.abs().item() > 0


def test_rank_loss_gradient_pushes_preferred_image_up():
    s_a, s_b = t(0.0).requires_grad_(), t(0.0).requires_grad_()
    losses.rank_loss(s_a, s_b, t(1.0)).backward()
    # teacher prefers a: descending the loss raises s_a and lowers s_b
    assert s_a.grad.item() < 0 < s_b.grad.item()


def test_default_lambdas_are_the_papers():
    s, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.5, 3.0, 2.5])  # not collinear: L_PLCC > 0
    assert float(losses.plcc_loss(s, y)) > 0.1
    sa, sb, t, w = (
        torch.tensor([0.3, -1.0]),
        torch.tensor([0.1, 0.5]),
        torch.tensor([1.0, 0.0]),
        torch.tensor([0.9, 0.4]),
    )
    total = losses.distill_loss(scores=s, teacher_scores=y, s_a=sa, s_b=sb, t_ab=t, confidence=w).total
    assert float(total) == pytest.approx(float(losses.point_loss(s, y) + 0.5 * losses.rank_loss(sa, sb, t, w)))
    cal = losses.calibration_loss(s, y).total
    assert float(cal) == pytest.approx(float(losses.mse_loss(s, y) + 1.0 * losses.plcc_loss(s, y)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"use_point": False, "use_pair": False}, "distill_loss needs use_point or use_pair"),
        ({"scores": torch.ones(2), "use_pair": False}, "use_point=True needs scores and teacher_scores"),
        ({"teacher_scores": torch.ones(2), "use_pair": False}, "use_point=True needs scores and teacher_scores"),
        (
            {"s_b": torch.ones(2), "t_ab": torch.ones(2), "use_point": False, "use_confidence": False},
            "use_pair=True needs s_a, s_b and t_ab",
        ),
        (
            {"s_a": torch.ones(2), "t_ab": torch.ones(2), "use_point": False, "use_confidence": False},
            "use_pair=True needs s_a, s_b and t_ab",
        ),
        (
            {"s_a": torch.ones(2), "s_b": torch.ones(2), "use_point": False, "use_confidence": False},
            "use_pair=True needs s_a, s_b and t_ab",
        ),
        (
            {"s_a": torch.ones(2), "s_b": torch.ones(2), "t_ab": torch.ones(2), "use_point": False},
            "use_confidence=True needs confidence",
        ),
    ],
)
def test_missing_inputs_of_an_enabled_term_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        losses.distill_loss(**kwargs)


def test_plcc_eps_is_the_one_given():
    # A near-constant batch: the sums of squares multiply to 2e-6 * 8, under the eps given here,
    # so the denominator is sqrt(eps): rho = cov / sqrt(eps).
    s, y = torch.tensor([1.0, 1.001, 0.999]), torch.tensor([1.0, 3.0, -1.0])
    cov = float(((s - s.mean()) * (y - y.mean())).sum())
    assert float(losses.plcc_loss(s, y, eps=1.0)) == pytest.approx(1.0 - cov, rel=1e-4)
    assert float(losses.pearson(s, y, eps=1.0)) == pytest.approx(cov, rel=1e-4)
    assert float(losses.plcc_loss(s, y)) == pytest.approx(0.0, abs=1e-4)  # the default eps is far below
