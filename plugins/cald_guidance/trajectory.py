"""The ``trajectory`` mode: a teacher fine-tuned alongside the student (Algorithm 2).

The teacher starts from the source (pretrained) weights and has its own AdamW and schedule.
Every step it gives targets; every ``T_u``-th step it also back-propagates its own task loss
(from the same forward) and, after the student's update, takes an optimizer step, so the
student always distils from the states computed before that update. On the other steps its
forward runs in inference mode: no gradient would be used, and the values are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field

from cald_framework.contracts import CaldOutput, PluginOptions
from cald_framework.engine.guidance import GuidanceContext, GuidanceSchedule, StepPlan, run_frozen
from cald_framework.engine.optim import build_optimizer
from cald_framework.engine.precision import Precision
from cald_framework.engine.schedules import build_scheduler


class TrajectoryOptions(PluginOptions):
    #: the teacher takes an optimizer step every ``T_u`` student steps
    T_u: int = Field(default=1, gt=0)
    #: the teacher's learning rate (default: ``training.lr``)
    teacher_lr: float | None = Field(default=None, gt=0)
    #: the teacher's schedule over its own updates (default: ``training.schedule``)
    teacher_schedule: Literal["constant", "linear", "cosine", "exponential"] | None = None
    teacher_warmup_steps: int | None = Field(default=None, ge=0)
    teacher_warmup_ratio: float | None = Field(default=None, ge=0, lt=1)

    def overrides(self) -> dict[str, Any]:
        """The ``[training]`` fields these options replace for the teacher."""
        chosen = {
            "lr": self.teacher_lr,
            "schedule": self.teacher_schedule,
            "warmup_steps": self.teacher_warmup_steps,
            "warmup_ratio": self.teacher_warmup_ratio,
        }
        return {key: value for key, value in chosen.items() if value is not None}


class TrajectorySchedule(GuidanceSchedule):
    def __init__(self, options: TrajectoryOptions, context: GuidanceContext):
        self.context = context
        self.every = options.T_u
        self.teacher = context.prepare_teacher(context.require("source")(), trainable=True)
        training = context.training.model_copy(update=options.overrides())
        self.max_grad_norm = training.max_grad_norm
        self.optimizer = build_optimizer(self.teacher, training)
        self.scheduler = build_scheduler(
            self.optimizer, training, max(1, context.total_steps // self.every)
        )
        self.precision = Precision(context.teacher_precision.name, context.device)
        self.updating = False

    def plan(self, step: int) -> StepPlan:
        self.updating = (step + 1) % self.every == 0
        return StepPlan(self.context.weights, uses_teacher=True)

    def teacher_output(self, batch: Mapping[str, Any]) -> CaldOutput:
        if not self.updating:
            return run_frozen(self.teacher, batch, self.precision)
        with self.precision.autocast():
            output = self.teacher(**batch["inputs"])
            loss = self.context.task.loss(output, batch)
        self.precision.backward(loss / self.context.training.grad_accum)
        return output

    def _average_gradients(self) -> None:
        """The same teacher on every process: its gradients are averaged like the student's."""
        accelerator = self.context.accelerator
        if accelerator.num_processes == 1:
            return
        grads = [p.grad for p in self.teacher.parameters() if p.grad is not None]
        flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
        for grad, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(averaged.view_as(grad))

    def after_step(self, step: int) -> None:
        if not self.updating:
            return
        self._average_gradients()
        norm = self.precision.unscale_and_clip(
            self.optimizer, self.teacher.parameters(), self.max_grad_norm
        )
        finite = norm is None or self.precision.scaler is not None or bool(torch.isfinite(norm))
        self.precision.step(self.optimizer, skip=not finite)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def trained_teacher(self) -> torch.nn.Module:
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["scaler"])
