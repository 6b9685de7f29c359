"""The KD, LD and weighted-sum losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from cald_framework.contracts import ExtractedStates, LossWeights
from cald_framework.engine.losses import combine, kd_loss, ld_loss, ld_per_layer, masked_mse
from cald_framework.errors import CaldError


def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def _kl(teacher: list[float], student: list[float], temperature: float) -> float:
    p = _softmax(teacher, temperature)
    q = _softmax(student, temperature)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


STUDENT = [[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]]
TEACHER = [[0.2, 0.4, 1.5], [2.0, -1.0, 0.0]]


@pytest.mark.parametrize("scale_t2", [True, False])
def test_sequence_kd_is_batchmean_kl_with_optional_t_squared(scale_t2: bool) -> None:
    expected = sum(_kl(t, s, 2.0) for s, t in zip(STUDENT, TEACHER)) / 2
    if scale_t2:
        expected *= 4.0
    got = kd_loss(
        torch.tensor(STUDENT, dtype=torch.float64),
        torch.tensor(TEACHER, dtype=torch.float64),
        None,
        temperature=2.0,
        scale_t2=scale_t2,
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_token_kd_averages_over_valid_positions_only() -> None:
    student = torch.tensor([STUDENT, [[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    teacher = torch.tensor([TEACHER, [[0.0, 9.0, 0.0], [5.0, 5.0, 5.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    valid = [(STUDENT[0], TEACHER[0]), (STUDENT[1], TEACHER[1]), ([9.0, 0.0, 0.0], [0.0, 9.0, 0.0])]
    expected = sum(_kl(t, s, 3.0) for s, t in valid) / 3
    got = kd_loss(student, teacher, mask, temperature=3.0, scale_t2=False)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kd_is_zero_for_equal_logits_and_rejects_shape_mismatch() -> None:
    logits = torch.randn(4, 5, dtype=torch.float64)
    assert kd_loss(logits, logits.clone(), None, temperature=2.0, scale_t2=True).item() == 0.0
    with pytest.raises(CaldError, match=r"KD: student logits \(4, 5\) and teacher logits \(4, 6\)"):
        kd_loss(logits, torch.randn(4, 6), None, temperature=2.0, scale_t2=True)


def test_masked_mse_ignores_padding() -> None:
    student = torch.tensor([[[1.0, 2.0], [100.0, 100.0]]], dtype=torch.float64)
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, False]])
    assert masked_mse(student, teacher, mask).item() == pytest.approx((1 + 4) / 2)


def _states(*layers: torch.Tensor, mask: torch.Tensor) -> ExtractedStates:
    return ExtractedStates(layers=list(layers), mask=mask)


@pytest.mark.parametrize("reduction, expected", [("mean", (2.5 + 8.0) / 2), ("sum", 2.5 + 8.0)])
def test_ld_combines_layers_by_reduction(reduction: str, expected: float) -> None:
    mask = torch.tensor([[True, False]])
    zeros = torch.zeros(1, 2, 2, dtype=torch.float64)
    first = torch.tensor([[[1.0, 2.0], [7.0, 7.0]]], dtype=torch.float64)
    second = torch.tensor([[[4.0, 0.0], [7.0, 7.0]]], dtype=torch.float64)
    student = _states(first, second, mask=mask)
    teacher = _states(zeros, zeros, mask=mask)
    assert ld_loss(student, teacher, reduction).item() == pytest.approx(expected)  # type: ignore[arg-type]
    assert ld_per_layer(student, teacher).tolist() == pytest.approx([2.5, 8.0])


def test_ld_is_zero_for_equal_states_and_names_mismatches() -> None:
    mask = torch.ones(2, 3, dtype=torch.bool)
    layers = [torch.randn(2, 3, 4) for _ in range(3)]
    same = _states(*layers, mask=mask)
    assert ld_loss(same, _states(*[x.clone() for x in layers], mask=mask), "mean").item() == 0.0
    with pytest.raises(CaldError, match="LD: the student gives 3 distilled layers and the teacher 2"):
        ld_loss(same, _states(*layers[:2], mask=mask), "mean")
    with pytest.raises(CaldError, match=r"LD: layer 1 has student states \(2, 3, 4\) and teacher states \(2, 3, 5\)"):
        ld_loss(same, _states(layers[0], torch.randn(2, 3, 5), layers[2], mask=mask), "mean")


def test_combine_weights_the_computed_terms() -> None:
    terms = {"task": torch.tensor(2.0), "ld": torch.tensor(3.0)}
    assert combine(terms, LossWeights(task=0.5, kd=7.0, ld=10.0)).item() == 31.0
    with pytest.raises(CaldError, match="no loss term is active in this step"):
        combine({}, LossWeights())
