"""Learning-rate schedules against their formulas, and the scheduler that applies them."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
import torch

from cald_framework.engine.schedules import build_scheduler, lr_factor, warmup_steps_for
from cald_framework.errors import CaldError
from cald_framework.spec.sections import TrainingSection

TOTAL, WARMUP, FLOOR = 20, 4, 0.1


def _factor(schedule: str, step: int) -> float:
    return lr_factor(
        step, schedule=schedule, total_steps=TOTAL, warmup_steps=WARMUP, min_lr_ratio=FLOOR  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "exponential"])
def test_warmup_is_linear_up_to_the_full_rate(schedule: str) -> None:
    assert [_factor(schedule, s) for s in range(WARMUP)] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    "schedule, formula",
    [
        ("constant", lambda p: 1.0),
        ("linear", lambda p: 1.0 - p),
        ("cosine", lambda p: FLOOR + (1 - FLOOR) * (1 + math.cos(math.pi * p)) / 2),
        ("exponential", lambda p: FLOOR**p),
    ],
)
def test_decay_phase_matches_formula(schedule: str, formula) -> None:  # type: ignore[no-untyped-def]
    for step in range(WARMUP, TOTAL + 1):
        progress = (step - WARMUP) / (TOTAL - WARMUP)
        assert _factor(schedule, step) == pytest.approx(formula(progress), abs=1e-15)
    assert _factor("cosine", TOTAL) == pytest.approx(FLOOR)
    assert _factor("exponential", TOTAL) == pytest.approx(FLOOR)
    assert _factor("linear", TOTAL) == 0.0


def test_warmup_ratio_rounds_up_and_steps_win() -> None:
    assert warmup_steps_for(TrainingSection(warmup_ratio=0.1), 25) == 3
    assert warmup_steps_for(TrainingSection(warmup_ratio=0.1, warmup_steps=7), 25) == 7
    assert warmup_steps_for(TrainingSection(), 25) == 0


def test_scheduler_sets_the_rate_of_each_update() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.5)
    training = TrainingSection(lr=0.5, schedule="cosine", warmup_steps=2, min_lr_ratio=0.2)
    scheduler = build_scheduler(optimizer, training, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [
        0.5 * lr_factor(s, schedule="cosine", total_steps=6, warmup_steps=2, min_lr_ratio=0.2)
        for s in range(6)
    ]
    assert seen == pytest.approx(expected, abs=1e-15)


def test_exponential_needs_a_floor() -> None:
    with pytest.raises(ValidationError, match="schedule 'exponential' decays toward min_lr_ratio"):
        TrainingSection(schedule="exponential")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    unchecked = TrainingSection.model_construct(schedule="exponential", min_lr_ratio=0.0)
    with pytest.raises(CaldError, match="training.min_lr_ratio must be above 0 for the exponential"):
        build_scheduler(optimizer, unchecked, total_steps=10)


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_decay_steps_reach_the_floor_early_and_stay_there(schedule: str) -> None:
    def factor(step: int) -> float:
        return lr_factor(step, schedule=schedule, total_steps=TOTAL, warmup_steps=WARMUP,  # type: ignore[arg-type]
                         min_lr_ratio=FLOOR, decay_steps=8)

    assert factor(WARMUP + 4) == pytest.approx(_factor(schedule, WARMUP + 8), abs=1e-15)
    assert [factor(s) for s in range(WARMUP + 8, TOTAL + 5)] == pytest.approx([FLOOR] * 13)


def test_the_paper_speech_schedule() -> None:
    # speech/models/model.py: exp(-(step - W) * ln(max_lr / final_lr) / decay_steps) until the
    # decay ends, then final_lr / max_lr; max 3e-4, final 1.5e-6, W = 5000, decay 75,000 steps
    def reference(step: int) -> float:
        if step < 80000:
            return math.exp(-(step - 5000) * math.log(3e-4 / 1.5e-6) / 75000)
        return 1.5e-6 / 3e-4

    training = TrainingSection(
        schedule="exponential", warmup_steps=5000, min_lr_ratio=0.005, decay_steps=75000
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    factor = build_scheduler(optimizer, training, total_steps=90000).lr_lambdas[0]
    for step in (5000, 20000, 79999, 80000, 89999):
        assert factor(step) == pytest.approx(reference(step), rel=1e-9)


def test_decay_steps_need_a_floored_schedule() -> None:
    with pytest.raises(ValidationError, match="decay_steps ends the decay at a floor, which schedule 'linear'"):
        TrainingSection(schedule="linear", decay_steps=10)
