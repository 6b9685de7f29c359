"""The ``trajectory`` mode: a teacher fine-tuned alongside the student (Algorithm 2).

The teacher starts from the source (pretrained) weights and trains as its fine-tuning run would
(the host's trainable-teacher updater): that run's learning rate and schedule, dropout on. As in
the paper's code, its schedule is laid over the run's ``total_steps`` and advances once per
teacher update, so its ``n``-th update uses the rate of a fine-tuning run's ``n``-th step; with
``T_u > 1`` it walks the first ``total_steps // T_u`` steps of that schedule. Every step the
teacher gives targets; every ``T_u``-th step it also back-propagates its own task loss and, after
the student's update, takes an optimizer step, so the student always distils from the states
computed before that update. On the other steps its forward runs in inference mode: no gradient
would be used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field
from torch import nn

from cald_framework.contracts import (
    CaldOutput,
    GuidanceContext,
    GuidanceSchedule,
    PluginOptions,
    ScheduleName,
    StepPlan,
)


class TrajectoryOptions(PluginOptions):
    #: the teacher takes an optimizer step every ``T_u`` student steps
    T_u: int = Field(default=1, gt=0)
    #: the teacher's learning rate (default: the teacher fine-tuning run's, ``teacher.finetune.lr``
    #: when set, else ``training.lr``)
    teacher_lr: float | None = Field(default=None, gt=0)
    #: the teacher's schedule (default: the teacher fine-tuning run's)
    teacher_schedule: ScheduleName | None = None
    teacher_warmup_steps: int | None = Field(default=None, ge=0)
    teacher_warmup_ratio: float | None = Field(default=None, ge=0, lt=1)


class TrajectorySchedule(GuidanceSchedule):
    def __init__(self, options: TrajectoryOptions, context: GuidanceContext):
        self.context = context
        self.every = options.T_u
        self.teacher = context.trainable_teacher(
            context.require("source")(),
            updates=context.total_steps,
            lr=options.teacher_lr,
            schedule=options.teacher_schedule,
            warmup_steps=options.teacher_warmup_steps,
            warmup_ratio=options.teacher_warmup_ratio,
        )
        self.updating = False

    def plan(self, step: int) -> StepPlan:
        self.updating = (step + 1) % self.every == 0
        return StepPlan(self.context.weights, uses_teacher=True)

    def teacher_output(self, batch: Mapping[str, Any]) -> CaldOutput:
        if self.updating:
            return self.teacher.learn(batch)
        return self.context.run_teacher(self.teacher.model, batch)

    def after_step(self, step: int) -> None:
        if self.updating:
            self.teacher.step()

    def trained_teacher(self) -> nn.Module:
        return self.teacher.model

    def state_dict(self) -> dict[str, Any]:
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state)
