"""The host-owned updater of a teacher trained alongside the student (the trajectory mode's).

It gives a teacher the same treatment as the student: forwards and losses under its precision,
losses divided by the micro-batches of a step, gradients averaged across processes (every
process holds the same teacher), clipping to ``max_grad_norm`` and no update when the gradient
norm is not finite. Its optimizer and schedule are its own, over its own number of updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ..contracts import CaldOutput, Task
from ..spec.sections import TrainingSection
from .optim import build_optimizer
from .precision import Precision
from .schedules import build_scheduler
from .step import apply_update


class TrainableTeacher:
    """A :class:`~cald_framework.contracts.TeacherUpdater` driven by the trainer's rules."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        training: TrainingSection,
        *,
        updates: int,
        accelerator: Accelerator,
        precision: Precision,
    ):
        self.model = model
        self.task = task
        self.accumulation = training.grad_accum
        self.max_grad_norm = training.max_grad_norm
        self.optimizer = build_optimizer(model, training)
        self.scheduler = build_scheduler(self.optimizer, training, updates)
        self.accelerator = accelerator
        self.precision = precision

    def learn(self, batch: Mapping[str, Any]) -> CaldOutput:
        with self.precision.autocast():
            output = self.model(**batch["inputs"])
            loss = self.task.loss(output, batch)
        self.precision.backward(loss / self.accumulation)
        return output

    def _average_gradients(self) -> None:
        """The same teacher on every process: its gradients are averaged like the student's."""
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
        for grad, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(averaged.view_as(grad))

    def step(self) -> None:
        self._average_gradients()
        apply_update(self.precision, self.optimizer, self.model.parameters(), self.max_grad_norm)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["scaler"])
