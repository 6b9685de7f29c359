"""What each guidance mode adds to a training step, relative to unguided training.

The steps here are the engine's steps stripped to what costs time, using the engine's own
loss functions: the student's forward, losses, backward and AdamW update, plus

* ``target`` (also ``waypoint`` and ``hybrid`` before its switch): a frozen teacher forward in
  inference mode, logit KD and layerwise MSE;
* ``trajectory``: a teacher forward *with* gradients every step, and every ``T_u``-th step the
  teacher's own backward and optimizer update.

Hybrid after its switch is an unguided step. Times are means over whole ``T_u`` cycles.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..contracts import CaldOutput, ExtractedStates
from ..engine.losses import kd_loss, ld_loss
from .measure import clock_for, synchronize

TaskLoss = Callable[[CaldOutput, Mapping[str, Any]], torch.Tensor]


def _states(output: CaldOutput) -> ExtractedStates:
    return ExtractedStates(list(output.hidden_states[1:]), output.hidden_mask)


def _distillation(student: CaldOutput, teacher: CaldOutput) -> torch.Tensor:
    mask = student.hidden_mask if student.logits.dim() == 3 else None
    kd = kd_loss(student.logits, teacher.logits, mask, temperature=2.0, scale_t2=True)
    return kd + ld_loss(_states(student), _states(teacher), "mean")


class _Stepper:
    """One training step of a student, optionally guided by a teacher, on a fixed batch."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module, batch: Mapping[str, Any], loss: TaskLoss
    ):
        self.student = copy.deepcopy(student).train()
        self.teacher = copy.deepcopy(teacher).eval()
        self.batch = batch
        self.loss = loss
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=1e-6)
        self.teacher_optimizer = torch.optim.AdamW(self.teacher.parameters(), lr=1e-6)

    def _update(self, model_loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        model_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def unguided(self, step: int) -> None:
        output = self.student(**self.batch["inputs"])
        self._update(self.loss(output, self.batch), self.optimizer)

    def target(self, step: int) -> None:
        with torch.inference_mode():
            guide = self.teacher(**self.batch["inputs"])
        output = self.student(**self.batch["inputs"])
        self._update(self.loss(output, self.batch) + _distillation(output, guide), self.optimizer)

    def trajectory(self, step: int, update_every: int) -> None:
        guide = self.teacher(**self.batch["inputs"])
        detached = CaldOutput(
            guide.logits.detach(), tuple(s.detach() for s in guide.hidden_states), guide.hidden_mask
        )
        output = self.student(**self.batch["inputs"])
        self._update(self.loss(output, self.batch) + _distillation(output, detached), self.optimizer)
        if (step + 1) % update_every == 0:
            self._update(self.loss(guide, self.batch), self.teacher_optimizer)


def _mean_step_seconds(
    step: Callable[[int], None], steps: int, device: torch.device, clock: str
) -> float:
    now = clock_for(clock, device)
    step(0)  # warm-up: allocates the optimizer state
    synchronize(device)
    start = now()
    for index in range(steps):
        step(index)
    synchronize(device)
    return (now() - start) / steps


def guidance_overhead(
    student: nn.Module,
    teacher: nn.Module,
    batch: Mapping[str, Any],
    loss: TaskLoss,
    *,
    steps: int = 4,
    update_every: int = 4,
    clock: str = "wall",
) -> list[dict[str, Any]]:
    """Rows ``mode, ms_per_step, vs_unguided`` for unguided, frozen-teacher and trajectory steps.

    ``steps`` is rounded up to whole cycles of ``update_every`` (the trajectory's ``T_u``);
    times are read by ``clock`` (see :data:`.measure.CLOCKS`).
    The models given are not modified: each mode trains copies.
    """
    device = next(student.parameters()).device
    steps = math.ceil(steps / update_every) * update_every
    stepper = _Stepper(student, teacher, batch, loss)
    timed = {
        "unguided": stepper.unguided,
        "target / waypoint / hybrid": stepper.target,
        f"trajectory (T_u={update_every})": lambda i: stepper.trajectory(i, update_every),
    }
    seconds = {mode: _mean_step_seconds(step, steps, device, clock) for mode, step in timed.items()}
    baseline = seconds["unguided"]
    return [
        {"mode": mode, "ms_per_step": value * 1000, "vs_unguided": value / baseline}
        for mode, value in seconds.items()
    ]
