"""The trajectory teacher trains as its fine-tuning run would.

Its optimizer follows the teacher fine-tuning run's settings (``teacher_lr`` overrides the rate);
its schedule is that run's, laid over the student's steps and advanced once per teacher update,
as in the paper's code. To read the learning rate of each update off the weights, the stub
task's loss is the mean of the logits: the gradient of the head's bias is then the same at every
update, so AdamW (no weight decay, no clipping) moves the bias by exactly the learning rate of
that update. Its learning forward runs in train mode (dropout on); the targets keep the frozen
teachers' mode, and an interrupted run resumes bitwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.contracts import AvailableTeachers, CaldOutput, LossWeights
from cald_framework.engine import GuidanceSetup, LossConfig, StepEnd, train
from cald_framework.engine.schedules import build_scheduler
from cald_framework.plugin_manager import load_registries
from cald_framework.spec.sections import TrainingSection
from cald_framework.testing.engine import (
    TinyModel,
    TinyTask,
    all_layers,
    evaluation,
    state_of,
    tiny_data,
    training,
)

STEPS, T_U, TEACHER_LR = 6, 2, 0.05
TRAJECTORY = load_registries().guidance.get("trajectory")


class MeanLogitTask(TinyTask):
    """The tiny task with a loss linear in the logits: a constant gradient for the head's bias."""

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return output.logits.mean()


def _setup(teacher: torch.nn.Module, options: dict[str, Any], **extra: Any) -> GuidanceSetup:
    teachers = AvailableTeachers(source=lambda: teacher, train_mode=extra.pop("train_mode", False))
    return GuidanceSetup(TRAJECTORY, TRAJECTORY.options.model_validate(options), teachers, **extra)


def _bias_moves(
    out: Path, options: dict[str, Any], teacher_training: TrainingSection | None = None
) -> list[float]:
    """How much the trajectory teacher's head bias moved at each student step."""
    teacher = TinyModel(seed=7, dropout=0.0)
    biases = [teacher.head.bias.detach().clone()]

    def record(end: StepEnd) -> None:
        biases.append(teacher.head.bias.detach().clone())

    settings = dict(max_steps=STEPS, lr=0.01, weight_decay=0.0, max_grad_norm=None)
    train(
        TinyModel(seed=1, dropout=0.0), MeanLogitTask(), tiny_data(), training=training(**settings),
        evaluation=evaluation(select_best=False), loss=LossConfig(LossWeights(task=1.0, ld=1.0)),
        output_dir=out, seed=0, guidance=_setup(teacher, options, teacher_training=teacher_training),
        extractor=all_layers, on_step_end=record,
    )
    moves = [before - after for before, after in zip(biases, biases[1:])]
    assert all(torch.allclose(move, move[0]) for move in moves)  # every class moves alike
    return [float(move[0]) for move in moves]


def _finetuning(**changes: Any) -> TrainingSection:
    """A teacher fine-tuning run's settings, unlike the student's in rate and schedule."""
    return training(max_steps=STEPS, weight_decay=0.0, max_grad_norm=None, **changes)


def test_teacher_lr_overrides_the_fine_tuning_rate(tmp_path: Path) -> None:
    finetuning = _finetuning(lr=0.02)
    moves = _bias_moves(tmp_path, {"T_u": 1, "teacher_lr": TEACHER_LR}, finetuning)
    assert moves == pytest.approx([TEACHER_LR] * STEPS, rel=1e-6)


def test_the_teacher_learns_at_the_fine_tuning_rate_not_the_students(tmp_path: Path) -> None:
    moves = _bias_moves(tmp_path, {"T_u": 1}, _finetuning(lr=TEACHER_LR))
    assert moves == pytest.approx([TEACHER_LR] * STEPS, rel=1e-6)


def test_without_fine_tuning_settings_the_teacher_takes_the_students(tmp_path: Path) -> None:
    assert _bias_moves(tmp_path, {"T_u": 1}) == pytest.approx([0.01] * STEPS, rel=1e-6)


def _fine_tuning_rates(settings: TrainingSection, steps: int) -> list[float]:
    """The learning rate of each step of a fine-tuning run with ``settings`` over ``steps``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    scheduler = build_scheduler(optimizer, settings, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_teachers_nth_update_takes_the_fine_tuning_runs_nth_rate(tmp_path: Path) -> None:
    finetuning = _finetuning(lr=TEACHER_LR, schedule="linear", warmup_steps=1)
    moves = _bias_moves(tmp_path, {"T_u": T_U}, finetuning)
    rates = _fine_tuning_rates(finetuning, STEPS)  # 0.05, then 1, 4/5, 3/5 ... of it
    updates = STEPS // T_U
    assert moves[T_U - 1 :: T_U] == pytest.approx(rates[:updates], rel=1e-6)
    assert moves[0::T_U] == [0.0] * updates
    assert min(rates[:updates]) > 0.5 * TEACHER_LR  # T_u = 2 walks half the schedule: no anneal


class ModeLog(TinyModel):
    """The tiny model noting, at each forward, whether it ran in train mode and with gradients."""

    def __init__(self) -> None:
        super().__init__(seed=7, dropout=0.2)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CaldOutput:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return super().forward(input_ids, attention_mask)


def _trajectory_run(out: Path, teacher: TinyModel, *, train_mode: bool, **run: Any) -> TinyModel:
    student = TinyModel(seed=1, dropout=0.2)
    train(
        student, TinyTask(), tiny_data(), loss=LossConfig(LossWeights(1.0, 0.5, 0.3)),
        training=training(max_steps=5, grad_accum=2, save_every=1, schedule="linear"),
        evaluation=evaluation(select_best=False), output_dir=out, seed=3,
        guidance=_setup(teacher, {"T_u": T_U}, train_mode=train_mode), extractor=all_layers, **run,
    )
    return student


LEARN, TRAIN_TARGETS, EVAL_TARGETS = (True, True), (True, False), (False, False)


@pytest.mark.parametrize(
    ("train_mode", "updating", "resting"),
    [
        (False, [LEARN, EVAL_TARGETS], [EVAL_TARGETS]),  # a second forward keeps targets deterministic
        (True, [LEARN], [TRAIN_TARGETS]),  # the paper's code: the learning forward gives the targets
    ],
)
def test_the_teacher_learns_with_dropout_and_targets_keep_the_teacher_mode(
    tmp_path: Path, train_mode: bool, updating: list[tuple[bool, bool]], resting: list[tuple[bool, bool]]
) -> None:
    teacher = ModeLog()
    _trajectory_run(tmp_path, teacher, train_mode=train_mode)
    expected = (resting * 2 + updating * 2) * 2 + resting * 2  # 2 micro-batches; steps 1, 3 update
    assert teacher.calls[: len(expected)] == expected


def test_a_resumed_run_with_eval_mode_targets_is_bitwise_identical(tmp_path: Path) -> None:
    straight_teacher = TinyModel(seed=7, dropout=0.2)
    straight = _trajectory_run(tmp_path / "straight", straight_teacher, train_mode=False)

    def crash(end: StepEnd) -> None:
        if end.step == 4:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        _trajectory_run(tmp_path / "cut", TinyModel(seed=7, dropout=0.2), train_mode=False, on_step_end=crash)
    resumed_teacher = TinyModel(seed=7, dropout=0.2)
    resumed = _trajectory_run(tmp_path / "cut", resumed_teacher, train_mode=False, resume=True)
    for model, other in ((straight, resumed), (straight_teacher, resumed_teacher)):
        mine, theirs = state_of(model), state_of(other)
        assert all(torch.equal(mine[name], theirs[name]) for name in mine)
