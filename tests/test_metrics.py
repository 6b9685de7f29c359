"""Metric functions against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import pytest
from cald_tasks.metrics import (
    accuracy,
    char_error_rate,
    class_f1,
    macro_f1,
    perplexity,
    word_error_rate,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score


def test_accuracy() -> None:
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5


def test_class_f1_by_hand() -> None:
    # class 1: tp = 2, predicted 3 times, present 4 times -> 2*2 / (3+4)
    assert class_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 1], positive=1) == pytest.approx(4 / 7)
    assert class_f1([0, 0], [0, 0], positive=1) == 0.0


def test_macro_f1_by_hand() -> None:
    # class 0: tp 1, pred 2, true 1 -> 2/3; class 1: tp 1, pred 1, true 2 -> 2/3; class 2: 1
    assert macro_f1([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=40))
def test_macro_f1_matches_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    expected = f1_score(references, predictions, average="macro", zero_division=0)
    assert macro_f1(predictions, references) == pytest.approx(expected)


def test_word_and_char_error_rates_by_hand() -> None:
    assert word_error_rate(["the cat sat"], ["the bat sat"]) == pytest.approx(1 / 3)
    assert char_error_rate(["the cat sat"], ["the bat sat"]) == pytest.approx(1 / 11)


def test_error_rates_are_summed_over_the_corpus_before_dividing() -> None:
    # 1 substitution + 2 deletions over 3 + 2 reference words
    refs, hyps = ["a b c", "d e"], ["a x c", ""]
    assert word_error_rate(refs, hyps) == pytest.approx(3 / 5)


def test_perplexity_is_exp_of_mean_nll() -> None:
    assert perplexity(6.0, 3) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="perplexity needs at least one token"):
        perplexity(0.0, 0)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references; they must match"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="a metric needs at least one reference"):
        macro_f1([], [])
