"""The guidance contract: at each training step, which teacher gives targets and with what weights.

A guidance mode is a plugin like any other. It registers a :class:`GuidancePlugin` through the
``cald_register_guidance`` hook, in a module its package names under the ``cald_framework``
entry-point group (``[project.entry-points."cald_framework"]`` in ``pyproject.toml``). The spec
names the mode with ``guidance.mode``; the keys of ``[guidance]`` beyond the common ones
(alphas, temperature, ``kd_scale_t2``, ``ld_reduction``, extractor) are validated by the
plugin's ``options`` model before anything is loaded, and reach ``build`` as that model.

**What the trainer does with a mode.** When training starts it calls
``plugin.build(options, context)`` once, with a :class:`GuidanceContext`, and uses the
:class:`GuidanceSchedule` returned. For every optimizer step ``i`` (0-based):

1. ``schedule.plan(i)`` returns a :class:`StepPlan`: the :class:`LossWeights` of this step and
   whether a teacher runs. It is called in order, exactly once per step, also after a resume.
2. For each micro-batch of the step, when the plan uses a teacher,
   ``schedule.teacher_output(batch)`` is called once; the trainer takes the KD logits
   (``task.kd_logits``) and the layer-loss states (the spec's extractor) from that one output,
   detached.
3. The student's forward, losses, backward and update (skipped on every process when a loss or
   gradient norm is not finite anywhere).
4. When the schedule's ``observes_losses`` is true and the update was applied,
   ``schedule.observe(i, losses)`` with the step's loss terms (``task``, ``kd``, ``ld``: means
   over the micro-batches and processes, as floats); a mapping it returns is recorded in
   ``metrics.jsonl`` as a ``guidance`` event of that step.
5. ``schedule.after_step(i)``, whether the update was skipped or not.

A loss term runs only when its weight is above zero. ``schedule.state_dict()`` is saved in every
checkpoint (next to, never inside, the student's weights) and handed to ``load_state_dict``
when a run resumes, before the first ``plan``. A resumed run must continue bitwise as if it
had never stopped, so keep there whatever ``plan`` depends on beyond the step number.
``trained_teacher()`` returns a teacher the schedule trained during the run, which the run
then reports as its teacher; ``summary()`` what the schedule decided (for ``results.json``).

A mode with ``choose`` set picks another mode before the run converts its student: the run
measures how far the teacher's hidden states drifted during its fine-tuning
(:class:`TeacherDrift`), and ``choose(options, drift)`` returns a :class:`ModeChoice`, the
mode the run then trains with.

**What a mode may use** is the :class:`GuidanceContext`, and nothing else of the host:

* ``device``, ``total_steps`` (the student's optimizer steps), ``weights`` (the spec's alphas)
  and ``task`` (the run's :class:`~cald_framework.contracts.Task`);
* ``require(name)``: a field of :class:`AvailableTeachers` that the mode cannot do without, or
  an error naming the mode. Teacher providers load nothing until called, so a mode pays only
  for the teachers it uses; set ``needs_target_teacher`` / ``needs_waypoints`` on the plugin so
  that the run produces them;
* ``prepare_teacher(model)``: the teacher on the device, in the configured train/eval mode,
  frozen; with ``training.distributed.teacher = "shard"`` its parameters are split over the
  processes, so every process must run it on the same steps (as schedules do: a plan depends
  on the step, not on the process);
* ``run_teacher(model, batch)``: a forward that nothing back-propagates into (inference mode,
  the teachers' precision);
* ``trainable_teacher(model, updates=...)``: a teacher the mode trains alongside the student,
  as a :class:`TeacherUpdater`, trained in train mode (dropout on) with the teacher fine-tuning
  run's settings. The host owns its optimizer (AdamW), learning-rate schedule, precision,
  gradient-accumulation scaling, clipping, averaging of gradients across processes, skipping of
  non-finite updates and checkpoint state.

:class:`FrozenTeacherSchedule` is the base of modes whose teacher is fixed while in use (set
``self.teacher`` in ``plan``); :class:`TaskOnly` is the schedule without a teacher. A complete
mode that distils from the fine-tuned target teacher on even steps only::

    from cald_framework import hookimpl
    from cald_framework.contracts import (
        FrozenTeacherSchedule, GuidanceContext, GuidancePlugin, LossWeights, NoOptions, StepPlan,
    )

    class EveryOther(FrozenTeacherSchedule):
        def __init__(self, options: NoOptions, context: GuidanceContext):
            super().__init__(context)
            self.teacher = context.prepare_teacher(context.require("target")())

        def plan(self, step: int) -> StepPlan:
            if step % 2:
                return StepPlan(LossWeights(task=self.context.weights.task), uses_teacher=False)
            return StepPlan(self.context.weights, uses_teacher=True)

    @hookimpl
    def cald_register_guidance(register):
        register(GuidancePlugin("every-other", NoOptions, EveryOther, needs_target_teacher=True))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from .options import PluginOptions, PrecisionName, ScheduleName
from .tasks import CaldOutput, Task


@dataclass(frozen=True)
class LossWeights:
    """The alphas of the three loss terms (task, logit KD, layerwise LD); zero switches one off."""

    task: float = 1.0
    kd: float = 0.0
    ld: float = 0.0

    @property
    def needs_teacher(self) -> bool:
        """Whether a distillation term is on, so that a step with these weights needs a teacher."""
        return self.kd > 0 or self.ld > 0


@dataclass(frozen=True)
class StepPlan:
    """What a schedule wants for one optimizer step."""

    weights: LossWeights
    #: whether :meth:`GuidanceSchedule.teacher_output` is called for each micro-batch
    uses_teacher: bool


@dataclass(frozen=True)
class Waypoint:
    """A saved state of the teacher's fine-tuning run, after ``step`` optimizer updates."""

    step: int
    path: Path


@dataclass(frozen=True)
class AvailableTeachers:
    """Lazy providers of the teachers a schedule may use; the run fills in what it has.

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
class TeacherDrift:
    """How far the teacher's hidden states moved from the pretrained model's along its
    fine-tuning run: ``cald analyze drift`` of its waypoints (mean cosine distance over the
    valid positions of held-out samples)."""

    #: the waypoints' steps, increasing
    steps: tuple[int, ...]
    #: per waypoint, the distance of each hidden state (0: the embedding output)
    layers: tuple[tuple[float, ...], ...]
    #: per waypoint, the mean over the layers ``1..L``
    means: tuple[float, ...]


@dataclass(frozen=True)
class ModeChoice:
    """The mode a choosing mode picked, with that mode's option values and why."""

    mode: str
    options: dict[str, Any]
    reason: str
    #: the figures the choice rests on, for ``results.json``
    details: dict[str, Any] = field(default_factory=dict)


#: the fields of :class:`AvailableTeachers` that :meth:`GuidanceContext.require` gives
TeacherKind = Literal["source", "target", "waypoints", "load_teacher"]


class TeacherUpdater(Protocol):
    """A teacher trained alongside the student; the host owns everything about its updates.

    Built by :meth:`GuidanceContext.trainable_teacher`. Forwards run in the teachers' precision;
    gradients are scaled for gradient accumulation and, before :meth:`step`, averaged across
    processes and clipped to ``training.max_grad_norm``; an update whose gradient norm is not
    finite is skipped. Its :meth:`state_dict` holds the teacher's weights, optimizer, schedule
    and loss scaler, so a schedule can return it from its own ``state_dict``.
    """

    @property
    def model(self) -> nn.Module:
        """The teacher (for frozen forwards through :meth:`GuidanceContext.run_teacher`)."""
        ...

    def learn(self, batch: Mapping[str, Any]) -> CaldOutput:
        """The teacher's output on one micro-batch, with the gradients of its task loss accumulated."""
        ...

    def step(self) -> None:
        """Update the teacher from the accumulated gradients, clear them, advance its schedule."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights, optimizer, schedule and loss scaler, for the checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run resumes."""
        ...


class GuidanceContext(Protocol):
    """What a schedule gets from the trainer when it is built (see the module docstring)."""

    @property
    def device(self) -> torch.device:
        """This process's device, where the student trains and teachers must run."""
        ...

    @property
    def total_steps(self) -> int:
        """The optimizer steps of the student's run."""
        ...

    @property
    def weights(self) -> LossWeights:
        """The alphas of the spec; a schedule may zero some of them for a step."""
        ...

    @property
    def task(self) -> Task:
        """The run's task, whose loss and KD logits the student trains with."""
        ...

    def require(self, what: TeacherKind) -> Any:
        """The field ``what`` of the run's :class:`AvailableTeachers`; an error when it is missing."""
        ...

    def prepare_teacher(self, model: nn.Module) -> nn.Module:
        """Put a frozen teacher on the device, in the configured train or eval mode."""
        ...

    def run_teacher(self, model: nn.Module, batch: Mapping[str, Any]) -> CaldOutput:
        """A teacher forward that nothing back-propagates into: inference mode, teacher precision."""
        ...

    def trainable_teacher(
        self,
        model: nn.Module,
        *,
        updates: int,
        lr: float | None = None,
        schedule: ScheduleName | None = None,
        warmup_steps: int | None = None,
        warmup_ratio: float | None = None,
    ) -> TeacherUpdater:
        """``model`` prepared for training, with its own optimizer and schedule over ``updates``.

        The settings default to the teacher fine-tuning run's (``[training]`` with
        ``[teacher.finetune]`` applied: optimizer, betas, weight decay, clipping and warm-up
        rules); its gradients accumulate over the student's micro-batches.
        """
        ...


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

    #: whether the trainer reports each applied step's losses to :meth:`observe` (one
    #: reduction across processes per step)
    observes_losses: bool = False

    def observe(self, step: int, losses: Mapping[str, float]) -> Mapping[str, Any] | None:
        """The loss terms of applied step ``step``; a returned mapping becomes a ``guidance`` event."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the schedule decided during the run, for ``results.json`` (empty: nothing)."""
        return {}


class TaskOnly(GuidanceSchedule):
    """No teacher at all: the task loss alone (unguided training, teacher fine-tuning)."""

    def __init__(self, context: GuidanceContext):
        self.weights = LossWeights(task=context.weights.task)

    def plan(self, step: int) -> StepPlan:
        return StepPlan(self.weights, uses_teacher=False)


class FrozenTeacherSchedule(GuidanceSchedule):
    """Base of the modes whose teacher is fixed while it is in use (target, waypoint, hybrid).

    Subclasses set :attr:`teacher` in :meth:`plan`; its forward is
    :meth:`GuidanceContext.run_teacher`.
    """

    def __init__(self, context: GuidanceContext):
        self.context = context
        self.teacher: nn.Module | None = None

    def teacher_output(self, batch: Mapping[str, Any]) -> CaldOutput:
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} planned no teacher for this step")
        return self.context.run_teacher(self.teacher, batch)


@dataclass(frozen=True)
class GuidancePlugin:
    """A registered guidance mode: ``build(options, context)`` returns its schedule."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions, GuidanceContext], GuidanceSchedule]
    #: the schedule needs the fine-tuned target teacher
    needs_target_teacher: bool = False
    #: the schedule needs the waypoints of the teacher's fine-tuning run
    needs_waypoints: bool = False
    #: whose weights the student starts from unless the spec says otherwise
    default_init: Literal["source", "target"] = "target"
    description: str = ""
    #: picks the mode the run trains with from the teacher's drift (see the module docstring);
    #: ``build`` is then never called
    choose: Callable[[PluginOptions, TeacherDrift], ModeChoice] | None = None
