"""Metric functions over whole evaluation sets, shared by the built-in tasks.

They take plain Python sequences so that any task can feed them from its accumulator; corpus
level figures (errors summed before dividing) are what papers report, not means of per-row rates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from types import ModuleType

from cald_framework.errors import CaldError


def accuracy(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    """Fraction of positions where the prediction equals the reference."""
    _check_same_length(predictions, references)
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def class_f1(
    predictions: Sequence[Hashable], references: Sequence[Hashable], positive: Hashable
) -> float:
    """F1 of one class against all others (0 when the class is neither predicted nor present)."""
    true_pos, predicted, actual = _class_counts(predictions, references)
    return _f1(true_pos[positive], predicted[positive], actual[positive])


def macro_f1(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    """Unweighted mean of per-class F1 over every class that is predicted or present."""
    true_pos, predicted, actual = _class_counts(predictions, references)
    classes = predicted.keys() | actual.keys()
    return sum(_f1(true_pos[c], predicted[c], actual[c]) for c in classes) / len(classes)


def _class_counts(
    predictions: Sequence[Hashable], references: Sequence[Hashable]
) -> tuple[Counter[Hashable], Counter[Hashable], Counter[Hashable]]:
    """Per class: true positives, times predicted, times present."""
    _check_same_length(predictions, references)
    true_pos = Counter(p for p, r in zip(predictions, references, strict=True) if p == r)
    return true_pos, Counter(predictions), Counter(references)


def _f1(true_pos: int, predicted: int, actual: int) -> float:
    return 2 * true_pos / (predicted + actual) if predicted + actual else 0.0


def perplexity(total_nll: float, total_tokens: int) -> float:
    """``exp`` of the token-averaged negative log-likelihood (natural log)."""
    if total_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(total_nll / total_tokens)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word edits (substitutions + deletions + insertions) over reference words, corpus level."""
    _check_same_length(hypotheses, references)
    return float(_jiwer().wer(list(references), list(hypotheses)))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Character edits over reference characters (spaces included), corpus level."""
    _check_same_length(hypotheses, references)
    return float(_jiwer().cer(list(references), list(hypotheses)))


def _jiwer() -> ModuleType:
    try:
        import jiwer
    except ImportError:
        raise CaldError(
            "error rates need the jiwer package: pip install 'cald-framework[speech]'"
        ) from None
    return jiwer


def _check_same_length(predictions: Sequence[object], references: Sequence[object]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions for {len(references)} references; they must match"
        )
    if not references:
        raise ValueError("a metric needs at least one reference")
