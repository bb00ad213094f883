"""The teacher's equations (paper Sec. 3.2, Eq 1-5) and answer-token mapping.

Point-wise: five level log-likelihoods -> softmax over the five levels (Eq 1) ->
expected score on 5..1 (Eq 2). Pair-wise: log-likelihoods of "A"/"B" -> p_A (Eq 3),
hard label t_ab = [p_A >= p_B] (Eq 4), confidence w = 1 - H(p)/log 2 (Eq 5).

Token mapping lives here so that every backend (stand-in, transformers, vLLM) maps
returned tokens to labels the same way: a token counts for a label when, after
stripping tokenizer space markers and case-folding, it equals the label or the
label's first token for the model's tokenizer; the probabilities of all variants
(" Good", "good", "GOOD", ...) are summed. So is the check of the answer itself
(:func:`require_mass`): when the label tokens hold less than ``min_token_mass`` of the
probability, the model answered something else and the row is an error, not a score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LEVELS: tuple[str, ...] = ("Excellent", "Good", "Fair", "Poor", "Bad")
LEVEL_VALUES: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)
PAIR_LABELS: tuple[str, ...] = ("A", "B")
LOG2 = math.log(2.0)

# Markers tokenizers put in front of a word-initial token: SentencePiece "▁", byte-level BPE "Ġ".
_SPACE_MARKERS = "\u2581\u0120 \t\n"


def level_probabilities(logliks: np.ndarray) -> np.ndarray:
    """Eq 1: softmax of the five level log-likelihoods along the last axis (numerically stable)."""
    x = np.asarray(logliks, dtype=np.float64)
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def expected_score(probs: np.ndarray) -> np.ndarray:
    """Eq 2: sum_k v_k p_k with v = (5, 4, 3, 2, 1) for Excellent..Bad."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(LEVEL_VALUES)


def pair_probability(loglik_a: np.ndarray, loglik_b: np.ndarray) -> np.ndarray:
    """Eq 3: p_A = e^{l_A} / (e^{l_A} + e^{l_B}) = sigmoid(l_A - l_B)."""
    d = np.asarray(loglik_a, dtype=np.float64) - np.asarray(loglik_b, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * d))  # stable sigmoid


def preference_label(p_a: np.ndarray) -> np.ndarray:
    """Eq 4: t_ab = 1 if p_A >= p_B (i.e. p_A >= 0.5) else 0."""
    p_a = np.asarray(p_a, dtype=np.float64)
    return (p_a >= 1.0 - p_a).astype(np.int8)


def pair_confidence(p_a: np.ndarray) -> np.ndarray:
    """Eq 5: w = 1 - H(p)/log 2 with H(p) = -sum_c p_c log p_c (0 log 0 := 0)."""
    p = np.clip(np.asarray(p_a, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(q > 0, q * np.log(q), 0.0))
    return np.clip(1.0 - h / LOG2, 0.0, 1.0)


def normalize_token(token: str) -> str:
    return token.strip(_SPACE_MARKERS).casefold()


@dataclass
class LabelScores:
    """Log-likelihoods of a closed label set read off one answer position.

    ``logliks`` has one entry per label (same order as the label tuple). ``mass`` is
    the total probability the matched tokens had; ``missing`` lists labels that had
    no variant among the returned tokens (their log-likelihood was imputed). ``top``
    holds the most likely tokens at the answer position, ``(token, logprob)``, best
    first, so that a row whose answer was something else can say what it was.
    ``image_bytes`` says per image how it reached the model: ``original`` (the file's
    own bytes), ``png`` / ``jpeg`` (re-encoded), ``pixels`` (decoded in process).
    """

    logliks: list[float]
    mass: float
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    image_bytes: list[str] = field(default_factory=list)

    @classmethod
    def failed(cls, labels: Sequence[str], message: str) -> LabelScores:
        return cls(logliks=[math.nan] * len(labels), mass=math.nan, missing=list(labels), error=message)


# Every row whose answer was not one of the labels carries an error starting with this, so that the
# scoring driver can tell a prompt/template problem (deterministic: retrying cannot help) from a
# failed request.
NOT_ANSWERED = "the teacher did not answer with a label"
TOP_SHOWN = 5


def format_top(top: Sequence[tuple[str, float]], n: int = TOP_SHOWN) -> str:
    """``'<think>' 0.97, 'The' 0.01`` (probabilities) for error messages."""
    return ", ".join(f"{token!r} {math.exp(lp):.3g}" for token, lp in list(top)[:n]) or "none returned"


def require_mass(scores: LabelScores, labels: Sequence[str], min_mass: float) -> LabelScores:
    """``scores`` unchanged when the label tokens held at least ``min_mass`` of the probability at the
    answer position; else an error row that keeps its mass and top tokens but no log-likelihoods.

    A low mass means the model's answer was something else (a thinking block, "The", a newline):
    the labels' log-likelihoods are then read from the tail of its distribution, and a score made
    from them would look like any other while meaning nothing.
    """
    if scores.error is not None or not math.isfinite(scores.mass) or scores.mass >= min_mass:
        return scores
    return LabelScores(
        logliks=[math.nan] * len(labels),
        mass=scores.mass,
        missing=list(scores.missing),
        error=f"{NOT_ANSWERED}: answer-token mass {scores.mass:.3g} < min_token_mass {min_mass:g} "
        f"(top tokens: {format_top(scores.top)})",
        top=list(scores.top),
        image_bytes=list(scores.image_bytes),
    )


def label_aliases(labels: Sequence[str], first_tokens: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Normalised token string -> label. ``first_tokens`` adds each label's first sub-token
    for a tokenizer that splits the word (e.g. "Excel" for "Excellent")."""
    aliases: dict[str, str] = {}
    for label in labels:
        for variant in [label, *((first_tokens or {}).get(label, ()))]:
            key = normalize_token(variant)
            if not key:
                continue
            other = aliases.get(key)
            if other is not None and other != label:
                raise ValueError(f"token {variant!r} is ambiguous between labels {other!r} and {label!r}")
            aliases[key] = label
    return aliases


def collapse_top_logprobs(
    top: Iterable[tuple[str, float]],
    labels: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    missing_policy: str = "floor",
) -> LabelScores:
    """Map (token, logprob) candidates at the answer position to per-label log-likelihoods.

    Variants of the same label are summed in probability space. A label with no
    variant among the candidates is imputed: ``floor`` uses the smallest returned
    logprob (an upper bound on its true value, since it was not in the top K),
    ``zero`` uses -inf (probability 0). Either way it is listed in ``missing``.
    """
    top = list(top)
    aliases = dict(aliases) if aliases is not None else label_aliases(labels)
    sums = {label: 0.0 for label in labels}
    seen = set()
    floor = math.inf
    for token, logprob in top:
        if logprob is None or not math.isfinite(logprob):
            continue
        floor = min(floor, logprob)
        label = aliases.get(normalize_token(token))
        if label is not None:
            sums[label] += math.exp(logprob)
            seen.add(label)
    missing = [label for label in labels if label not in seen]
    if missing_policy not in ("floor", "zero"):
        raise ValueError(f"missing_policy must be 'floor' or 'zero', got {missing_policy!r}")
    ranked = sorted(((t, lp) for t, lp in top if lp is not None and math.isfinite(lp)), key=lambda c: -c[1])
    if not seen:
        return LabelScores(
            logliks=[math.nan] * len(labels),
            mass=0.0,
            missing=list(labels),
            error=f"{NOT_ANSWERED}: none of the labels among the {len(ranked)} returned top tokens "
            f"(top tokens: {format_top(ranked)})",
            top=ranked[:TOP_SHOWN],
        )
    fill = floor if (missing_policy == "floor" and math.isfinite(floor)) else -math.inf
    logliks = [math.log(sums[label]) if label in seen else fill for label in labels]
    return LabelScores(logliks=logliks, mass=float(sum(sums.values())), missing=missing, top=ranked[:TOP_SHOWN])
