"""The trainer's side of the guidance contract (:mod:`cald_framework.contracts.guidance`).

:class:`TrainerContext` is the :class:`~cald_framework.contracts.GuidanceContext` that schedules
are built with: it hands out the run's teachers, runs frozen teacher forwards in the teachers'
precision and builds :class:`~.teacher_updates.TrainableTeacher` updaters with the teacher
fine-tuning run's optimizer settings. :class:`GuidanceSetup` is what the pipeline passes to the
trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ..contracts import (
    AvailableTeachers,
    CaldOutput,
    GuidancePlugin,
    GuidanceSchedule,
    LossWeights,
    PluginOptions,
    ScheduleName,
    Task,
    TeacherKind,
)
from ..errors import CaldError
from ..spec.sections import TrainingSection
from .precision import Precision
from .teacher_layout import check_teacher_layout, place_frozen_teacher
from .teacher_updates import TrainableTeacher, frozen_forward

_DESCRIPTIONS = {
    "source": "the source (pretrained) teacher",
    "target": "the fine-tuned target teacher",
    "waypoints": "the waypoints of a teacher fine-tuning run",
    "load_teacher": "a loader for waypoint files",
}


@dataclass
class TrainerContext:
    """What the trainer tells a schedule when building it."""

    mode: str
    teachers: AvailableTeachers
    total_steps: int
    #: the alphas of the spec; a schedule may zero some of them for a step
    weights: LossWeights
    task: Task
    training: TrainingSection
    #: the teacher fine-tuning run's settings, which a teacher trained alongside the student uses
    teacher_training: TrainingSection
    accelerator: Accelerator
    #: autocast of teacher forwards (``teachers.precision``, else the run's)
    teacher_precision: Precision

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def require(self, what: TeacherKind) -> Any:
        provided = getattr(self.teachers, what)
        if not provided:
            raise CaldError(
                f"guidance mode {self.mode!r} needs {_DESCRIPTIONS[what]}, but none was given"
            )
        return provided

    def __post_init__(self) -> None:
        check_teacher_layout(self.training.distributed.teacher, self.accelerator)

    def _place(self, model: nn.Module, *, trainable: bool) -> nn.Module:
        model.train(self.teachers.train_mode)
        model.requires_grad_(trainable)
        if trainable:  # a teacher the mode trains stays whole (its updater averages gradients)
            return model.to(self.device)
        return place_frozen_teacher(model, self.accelerator, self.training.distributed.teacher)

    def prepare_teacher(self, model: nn.Module) -> nn.Module:
        return self._place(model, trainable=False)

    def run_teacher(self, model: nn.Module, batch: Mapping[str, Any]) -> CaldOutput:
        return frozen_forward(model, batch, self.teacher_precision)

    def trainable_teacher(
        self,
        model: nn.Module,
        *,
        updates: int,
        lr: float | None = None,
        schedule: ScheduleName | None = None,
        warmup_steps: int | None = None,
        warmup_ratio: float | None = None,
    ) -> TrainableTeacher:
        chosen = {"lr": lr, "schedule": schedule, "warmup_steps": warmup_steps, "warmup_ratio": warmup_ratio}
        optimization = self.teacher_training.model_copy(
            update={key: value for key, value in chosen.items() if value is not None}
        )
        return TrainableTeacher(
            self._place(model, trainable=True),
            self.task,
            optimization,
            accumulation=self.training.grad_accum,
            updates=updates,
            targets_in_train_mode=self.teachers.train_mode,
            accelerator=self.accelerator,
            precision=Precision(self.teacher_precision.name, self.device),
        )


@dataclass(frozen=True)
class GuidanceSetup:
    """A guidance plugin with its validated options and the teachers the pipeline can provide."""

    plugin: GuidancePlugin
    options: PluginOptions
    teachers: AvailableTeachers = AvailableTeachers()
    #: the teacher fine-tuning run's settings (``[training]`` with ``[teacher.finetune]``
    #: applied), for a teacher the mode trains (default: the student's ``[training]``)
    teacher_training: TrainingSection | None = None

    def build(self, context: TrainerContext) -> GuidanceSchedule:
        """The plugin's schedule, refused with the mode's name when it is not a GuidanceSchedule."""
        schedule = self.plugin.build(self.options, context)
        if not isinstance(schedule, GuidanceSchedule):
            raise CaldError(
                f"guidance mode {self.plugin.name!r} built a {type(schedule).__name__}, "
                "not a GuidanceSchedule"
            )
        return schedule
