"""``hybrid`` with ``T_h = "plateau"``: the switch fires at the step the definition says, and a
resumed run continues bitwise across it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_guidance.plateau import PlateauDetector, PlateauSwitch
from cald_guidance.plugin import MODES

from cald_framework.contracts import AvailableTeachers, LossWeights
from cald_framework.engine import GuidanceSetup, LossConfig, StepEnd, train
from cald_framework.testing.engine import (
    TinyModel,
    TinyTask,
    all_layers,
    evaluation,
    tiny_data,
    training,
)

HYBRID = {mode.name: mode for mode in MODES}["hybrid"]
PLATEAU = {"T_h": "plateau", "plateau_window": 2, "plateau_min_improvement": 0.1}


def test_the_switch_fires_when_the_window_mean_improves_less_than_the_threshold() -> None:
    # windows of 2: (10, 8) -> (6, 5) is 37.5 % better, (8, 6) -> (5, 4.9) 28 %,
    # (6, 5) -> (4.9, 4.8) 12.7 %, (5, 4.9) -> (4.8, 4.75) 3.5 %: a plateau at the 7th value
    losses = [10, 8, 6, 5, 4.9, 4.8, 4.75, 4.7]
    switch = PlateauSwitch(HYBRID.options.model_validate(PLATEAU), LossWeights(ld=1.0))
    events = [switch.observe(step, {"ld": loss}) for step, loss in enumerate(losses)]
    assert [step for step, event in enumerate(events) if event] == [6]
    assert events[6]["switch_step"] == 7
    assert events[6]["layer_loss_improvement"] == pytest.approx((5 + 4.9 - 4.8 - 4.75) / (5 + 4.9))
    assert "improved 3.54% on the 2 steps before" in events[6]["reason"]
    assert switch.summary()["switch_step"] == 7


def test_no_verdict_before_two_full_windows() -> None:
    detector = PlateauDetector(window=3, min_improvement=0.5)
    assert [detector.add(1.0) for _ in range(6)] == [False] * 5 + [True]


def test_the_plateau_switch_needs_the_layer_loss() -> None:
    with pytest.raises(ValueError, match="guidance.alpha_ld is 0"):
        PlateauSwitch(HYBRID.options.model_validate(PLATEAU), LossWeights(kd=1.0))


def test_plateau_options_need_t_h_plateau() -> None:
    with pytest.raises(ValueError, match='plateau_window applies only with T_h = "plateau"'):
        HYBRID.options.model_validate({"T_h": 3, "plateau_window": 5})


STEPS = 8


class Crash(Exception):
    pass


def _run(out: Path, options: dict[str, Any], *, resume: bool = False, crash_at: int | None = None) -> TinyModel:
    def crash(end: StepEnd) -> None:
        if end.step == crash_at:
            raise Crash

    student = TinyModel(seed=1, dropout=0.2)
    teachers = AvailableTeachers(target=lambda: TinyModel(seed=5), train_mode=True)
    train(
        student, TinyTask(), tiny_data(), loss=LossConfig(LossWeights(1.0, 0.5, 0.3)),
        training=training(max_steps=STEPS, save_every=1), evaluation=evaluation(every=4, select_best=False),
        output_dir=out, seed=3, guidance=GuidanceSetup(HYBRID, HYBRID.options.model_validate(options), teachers),
        extractor=all_layers, resume=resume, on_step_end=crash if crash_at else None,
    )
    return student


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


#: a switch that fires as soon as two windows of one step are in: after step index 1
EAGER = {"T_h": "plateau", "plateau_window": 1, "plateau_min_improvement": 0.99}


def test_a_training_run_switches_at_the_plateau_and_logs_it(tmp_path: Path) -> None:
    _run(tmp_path, EAGER)
    events = _events(tmp_path)
    (switch,) = [event for event in events if event["event"] == "guidance"]
    assert (switch["step"], switch["switch_step"]) == (2, 2)
    terms = [{"kd", "ld"} & event.keys() for event in events if event["event"] == "train"]
    assert terms == [{"kd", "ld"}] * 2 + [set()] * (STEPS - 2)


#: cut before the switch is checkpointed (resumed from step 1) and after it (from step 4)
@pytest.mark.parametrize("crash_at", [2, 5])
def test_resume_across_the_plateau_switch_is_bitwise(tmp_path: Path, crash_at: int) -> None:
    straight = _run(tmp_path / "straight", EAGER)
    with pytest.raises(Crash):
        _run(tmp_path / "cut", EAGER, crash_at=crash_at)
    resumed = _run(tmp_path / "cut", EAGER, resume=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert _comparable(tmp_path / "cut") == _comparable(tmp_path / "straight")


def _comparable(out: Path) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in event.items() if key != "samples_per_s"}
        for event in _events(out)
        if event["event"] != "warning"
    ]
