"""The student's training objectives (paper Sec. 3.2.3 and 3.3, Eq 6-12), in torch.

Stage 1 (distillation): point-wise SmoothL1 to the teacher's expected score (Eq 6),
pair-wise confidence-weighted BCE on sigmoid(s_a - s_b) (Eq 7-8), combined as
L_dis = L_reg + lambda_dis * L_rank (Eq 9). Stage 2 (calibration fine-tuning):
MSE to MOS (Eq 10) plus 1 - batch Pearson correlation (Eq 11), combined as
L_cal = L_MSE + lambda_cal * L_PLCC (Eq 12).

All losses are means over the batch (the expectations in the paper). Inputs are
1-D tensors of scores; they are promoted to float32 so that bf16 autocast outputs
do not lose precision inside the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Below this, the product of the two sums of squares counts as zero variance (Eq 11 guard).
PLCC_EPS = 1e-12


def _vec(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1).float()


def point_loss(scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Eq 6: mean SmoothL1 (beta = 1) between student scores and teacher expected scores."""
    return F.smooth_l1_loss(_vec(scores), _vec(teacher_scores), reduction="mean", beta=1.0)


def pair_probability(s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """Eq 7: P(a > b) = sigmoid(s_a - s_b)."""
    return torch.sigmoid(_vec(s_a) - _vec(s_b))


def rank_loss(
    s_a: torch.Tensor, s_b: torch.Tensor, t_ab: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq 8: mean over pairs of w_ab * BCE(sigmoid(s_a - s_b), t_ab).

    Computed as BCE-with-logits on the score difference, which is the same value as
    BCE on Eq 7's probability but stays finite when the difference is large.
    ``weights=None`` means unit weights (the ``use_confidence: false`` ablation).
    """
    per_pair = F.binary_cross_entropy_with_logits(_vec(s_a) - _vec(s_b), _vec(t_ab), reduction="none")
    if weights is not None:
        per_pair = per_pair * _vec(weights)
    return per_pair.mean()


@dataclass
class DistillTerms:
    """Eq 9's total and its two terms; a term is None when it is switched off."""

    total: torch.Tensor
    reg: torch.Tensor | None
    rank: torch.Tensor | None


def distill_loss(
    *,
    scores: torch.Tensor | None = None,
    teacher_scores: torch.Tensor | None = None,
    s_a: torch.Tensor | None = None,
    s_b: torch.Tensor | None = None,
    t_ab: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
    lambda_dis: float = 0.5,
    use_point: bool = True,
    use_pair: bool = True,
    use_confidence: bool = True,
) -> DistillTerms:
    """Eq 9: L_dis = L_reg + lambda_dis * L_rank.

    ``use_point=False`` drops L_reg and ``use_pair=False`` drops L_rank (the Table 3
    ablations); ``use_confidence=False`` replaces w_ab by 1 in Eq 8. The inputs of an
    enabled term are required; those of a disabled term are ignored.
    """
    if not (use_point or use_pair):
        raise ValueError("distill_loss needs use_point or use_pair")
    reg = rank = None
    total = None
    if use_point:
        if scores is None or teacher_scores is None:
            raise ValueError("use_point=True needs scores and teacher_scores")
        reg = point_loss(scores, teacher_scores)
        total = reg
    if use_pair:
        if s_a is None or s_b is None or t_ab is None:
            raise ValueError("use_pair=True needs s_a, s_b and t_ab")
        if use_confidence and confidence is None:
            raise ValueError("use_confidence=True needs confidence")
        rank = rank_loss(s_a, s_b, t_ab, confidence if use_confidence else None)
        total = lambda_dis * rank if total is None else total + lambda_dis * rank
    return DistillTerms(total=total, reg=reg, rank=rank)


def mse_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq 10: mean squared error between student scores and MOS."""
    return F.mse_loss(_vec(scores), _vec(targets), reduction="mean")


def pearson(scores: torch.Tensor, targets: torch.Tensor, eps: float = PLCC_EPS) -> torch.Tensor:
    """Batch Pearson correlation cov(s, y) / (sigma(s) sigma(y)).

    The denominator is clamped at ``sqrt(eps)``: a batch whose scores (or targets) are all
    equal gives rho = 0 with finite gradients instead of 0/0.
    """
    s = _vec(scores)
    y = _vec(targets)
    sc = s - s.mean()
    yc = y - y.mean()
    denom = torch.sqrt((sc.pow(2).sum() * yc.pow(2).sum()).clamp_min(eps))
    return (sc * yc).sum() / denom


def plcc_loss(scores: torch.Tensor, targets: torch.Tensor, eps: float = PLCC_EPS) -> torch.Tensor:
    """Eq 11: 1 - rho(s, y) over the mini-batch."""
    return 1.0 - pearson(scores, targets, eps)


@dataclass
class CalibrationTerms:
    total: torch.Tensor
    mse: torch.Tensor
    plcc: torch.Tensor


def calibration_loss(scores: torch.Tensor, targets: torch.Tensor, lambda_cal: float = 1.0) -> CalibrationTerms:
    """Eq 12: L_cal = L_MSE + lambda_cal * L_PLCC."""
    mse = mse_loss(scores, targets)
    plcc = plcc_loss(scores, targets)
    return CalibrationTerms(total=mse + lambda_cal * plcc, mse=mse, plcc=plcc)
