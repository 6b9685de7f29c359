"""The guidance interface: at each step, which teacher gives targets and with what loss weights.

A guidance plugin's ``build(options, context)`` returns a :class:`GuidanceSchedule`. Before each
optimizer step the trainer asks it for a :class:`StepPlan`; when the plan wants a teacher, the
trainer calls :meth:`GuidanceSchedule.teacher_output` once per micro-batch and distils from the
result; after the step it calls :meth:`GuidanceSchedule.after_step`. A schedule's
``state_dict()`` goes into the checkpoint next to (never inside) the student's weights.

Teachers reach a schedule only through :class:`TeacherSources`, whose providers load nothing
until called, so a mode pays only for the teachers it uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ..contracts import CaldOutput, GuidancePlugin, PluginOptions, Task
from ..errors import CaldError
from ..spec.sections import TrainingSection
from .losses import LossWeights
from .precision import Precision, PrecisionName


@dataclass(frozen=True)
class Waypoint:
    """A saved state of the teacher's fine-tuning run, after ``step`` optimizer updates."""

    step: int
    path: Path


@dataclass(frozen=True)
class TeacherSources:
    """Lazy providers of the teachers a schedule may use; the pipeline fills in what it has.

    Each provider returns a new model with the task's head on every call.
    """

    #: the pretrained, not fine-tuned, teacher
    source: Callable[[], nn.Module] | None = None
    #: the teacher fine-tuned on the task
    target: Callable[[], nn.Module] | None = None
    #: the waypoints of the teacher's fine-tuning run, by increasing step
    waypoints: Sequence[Waypoint] = ()
    #: builds a teacher holding the weights saved in a waypoint file
    load_teacher: Callable[[Path], nn.Module] | None = None
    #: keep dropout (and SpecAugment) on in the teacher, as the paper's code did
    train_mode: bool = False
    #: the teachers' precision, e.g. ``"bf16"`` for cheap targets while the student trains in
    #: fp32 (default: the run's ``training.precision``)
    precision: PrecisionName | None = None


@dataclass(frozen=True)
class StepPlan:
    """What a schedule wants for one optimizer step."""

    weights: LossWeights
    #: whether :meth:`GuidanceSchedule.teacher_output` is called for each micro-batch
    uses_teacher: bool


_DESCRIPTIONS = {
    "source": "the source (pretrained) teacher",
    "target": "the fine-tuned target teacher",
    "waypoints": "the waypoints of a teacher fine-tuning run",
    "load_teacher": "a loader for waypoint files",
}


@dataclass
class GuidanceContext:
    """What the trainer tells a schedule when building it."""

    mode: str
    teachers: TeacherSources
    total_steps: int
    #: the alphas of the spec; a schedule may zero some of them for a step
    weights: LossWeights
    task: Task
    training: TrainingSection
    accelerator: Accelerator
    #: autocast of teacher forwards (``teachers.precision``, else the run's)
    teacher_precision: Precision

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def require(self, what: str) -> Any:
        """A field of :class:`TeacherSources` that this mode cannot do without."""
        provided = getattr(self.teachers, what)
        if not provided:
            raise CaldError(
                f"guidance mode {self.mode!r} needs {_DESCRIPTIONS[what]}, but none was given"
            )
        return provided

    def prepare_teacher(self, model: nn.Module, *, trainable: bool = False) -> nn.Module:
        """Put a teacher on the device, in the configured mode, frozen unless ``trainable``."""
        model.to(self.device)
        model.train(self.teachers.train_mode)
        model.requires_grad_(trainable)
        return model


def run_frozen(teacher: nn.Module, batch: Mapping[str, Any], precision: Precision) -> CaldOutput:
    """A teacher forward that nothing back-propagates into: inference mode, under ``precision``."""
    with torch.inference_mode(), precision.autocast():
        return teacher(**batch["inputs"])


class GuidanceSchedule(ABC):
    """Decides, step by step, the teacher and the loss weights of a run."""

    @abstractmethod
    def plan(self, step: int) -> StepPlan:
        """Called once before optimizer step ``step`` (0-based), in order, also after a resume."""

    def teacher_output(self, batch: Mapping[str, Any]) -> CaldOutput:
        """The teacher's output on one micro-batch of the step last planned."""
        raise NotImplementedError(f"{type(self).__name__} uses no teacher")

    def after_step(self, step: int) -> None:
        """Called after optimizer step ``step``, skipped or not."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue (tensors allowed); empty for pure functions of the step."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; called after building, before the first :meth:`plan`."""

    def trained_teacher(self) -> nn.Module | None:
        """A teacher this schedule trained during the run, reported as the run's teacher."""
        return None


class TaskOnly(GuidanceSchedule):
    """No teacher at all: the task loss alone (unguided training, teacher fine-tuning)."""

    def __init__(self, context: GuidanceContext):
        self.weights = LossWeights(task=context.weights.task)

    def plan(self, step: int) -> StepPlan:
        return StepPlan(self.weights, uses_teacher=False)


class FrozenTeacherSchedule(GuidanceSchedule):
    """Base of the modes whose teacher is fixed while it is in use (target, waypoint, hybrid).

    Subclasses set :attr:`teacher` in :meth:`plan`; its forward is :func:`run_frozen`.
    """

    def __init__(self, context: GuidanceContext):
        self.context = context
        self.teacher: nn.Module | None = None

    def teacher_output(self, batch: Mapping[str, Any]) -> CaldOutput:
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} planned no teacher for this step")
        return run_frozen(self.teacher, batch, self.context.teacher_precision)


@dataclass(frozen=True)
class GuidanceSetup:
    """A guidance plugin with its validated options and the teachers the pipeline can provide."""

    plugin: GuidancePlugin
    options: PluginOptions
    teachers: TeacherSources = TeacherSources()

    def build(self, context: GuidanceContext) -> GuidanceSchedule:
        schedule = self.plugin.build(self.options, context)
        if not isinstance(schedule, GuidanceSchedule):
            raise CaldError(
                f"guidance mode {self.plugin.name!r} built a {type(schedule).__name__}, "
                "not a GuidanceSchedule"
            )
        return schedule
