"""The trajectory teacher's optimizer: ``teacher_lr`` and a schedule over the teacher's own updates.

The teacher takes an optimizer step every ``T_u`` student steps, so its schedule spans
``total_steps // T_u`` updates. To read the learning rate of each update off the weights, the
stub task's loss is the mean of the logits: the gradient of the head's bias is then the same at
every update, so AdamW (no weight decay, no clipping) moves the bias by exactly the learning
rate of that update.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.contracts import AvailableTeachers, CaldOutput, LossWeights
from cald_framework.engine import GuidanceSetup, LossConfig, StepEnd, train
from cald_framework.plugin_manager import load_registries
from cald_framework.testing.engine import TinyModel, TinyTask, all_layers, evaluation, tiny_data, training

STEPS, T_U, TEACHER_LR = 6, 2, 0.05


class MeanLogitTask(TinyTask):
    """The tiny task with a loss linear in the logits: a constant gradient for the head's bias."""

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return output.logits.mean()


def _bias_moves(out: Path, options: dict[str, Any], **changes: Any) -> list[float]:
    """How much the trajectory teacher's head bias moved at each student step."""
    teacher = TinyModel(seed=7, dropout=0.0)
    biases = [teacher.head.bias.detach().clone()]

    def record(end: StepEnd) -> None:
        biases.append(teacher.head.bias.detach().clone())

    plugin = load_registries().guidance.get("trajectory")
    setup = GuidanceSetup(plugin, plugin.options.model_validate(options), AvailableTeachers(source=lambda: teacher))
    settings = dict(max_steps=STEPS, lr=0.01, weight_decay=0.0, max_grad_norm=None, **changes)
    train(
        TinyModel(seed=1, dropout=0.0), MeanLogitTask(), tiny_data(), training=training(**settings),
        evaluation=evaluation(select_best=False), loss=LossConfig(LossWeights(task=1.0, ld=1.0)),
        output_dir=out, seed=0, guidance=setup, extractor=all_layers, on_step_end=record,
    )
    moves = [before - after for before, after in zip(biases, biases[1:])]
    assert all(torch.allclose(move, move[0]) for move in moves)  # every class moves alike
    return [float(move[0]) for move in moves]


def test_teacher_lr_sets_the_teachers_learning_rate(tmp_path: Path) -> None:
    moves = _bias_moves(tmp_path, {"T_u": 1, "teacher_lr": TEACHER_LR}, schedule="constant")
    assert moves == pytest.approx([TEACHER_LR] * STEPS, rel=1e-6)


def test_the_teachers_schedule_spans_its_own_updates(tmp_path: Path) -> None:
    moves = _bias_moves(tmp_path, {"T_u": T_U, "teacher_lr": TEACHER_LR}, schedule="linear")
    updates = STEPS // T_U  # a linear decay over 3 updates: 1, 2/3, 1/3 of teacher_lr
    rates = [TEACHER_LR * (1 - k / updates) for k in range(updates)]
    assert moves == pytest.approx([0.0, rates[0], 0.0, rates[1], 0.0, rates[2]], rel=1e-6, abs=1e-12)
