"""The host-owned updater of a teacher trained alongside the student (the trajectory mode's).

The teacher trains as its fine-tuning run would: with that run's optimizer settings (the
``[training]`` settings with ``[teacher.finetune]`` applied), in train mode (dropout on), its
schedule laid over ``updates`` optimizer updates. It gets the student's treatment otherwise:
forwards and losses under its precision, losses divided by the micro-batches of a step,
gradients averaged across processes (every process holds the same teacher), clipping to
``max_grad_norm`` and no update when the gradient norm is not finite.

The targets it gives keep the frozen teachers' rule (``teacher.train_mode``): in train mode the
learning forward is also the target forward, as in the paper's code; in eval mode (the default)
a second, deterministic forward gives the targets, so that they do not depend on whether the
teacher learns at that step.
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


def frozen_forward(model: nn.Module, batch: Mapping[str, Any], precision: Precision) -> CaldOutput:
    """A teacher forward that nothing back-propagates into, in the teachers' precision."""
    with torch.inference_mode(), precision.autocast():
        return model(**batch["inputs"])


class TrainableTeacher:
    """A :class:`~cald_framework.contracts.TeacherUpdater` driven by the trainer's rules."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optimization: TrainingSection,
        *,
        accumulation: int,
        updates: int,
        targets_in_train_mode: bool,
        accelerator: Accelerator,
        precision: Precision,
    ):
        self.model = model
        self.task = task
        #: the student's micro-batches per step, over which the teacher's gradients accumulate
        self.accumulation = accumulation
        self.max_grad_norm = optimization.max_grad_norm
        self.optimizer = build_optimizer(model, optimization)
        self.scheduler = build_scheduler(self.optimizer, optimization, updates)
        self.targets_in_train_mode = targets_in_train_mode
        self.accelerator = accelerator
        self.precision = precision
        model.train(targets_in_train_mode)

    def learn(self, batch: Mapping[str, Any]) -> CaldOutput:
        self.model.train()
        with self.precision.autocast():
            output = self.model(**batch["inputs"])
            loss = self.task.loss(output, batch)
        self.precision.backward(loss / self.accumulation)
        if self.targets_in_train_mode:
            return output
        self.model.eval()
        return frozen_forward(self.model, batch, self.precision)

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
