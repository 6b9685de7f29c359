"""Modes with a frozen teacher: ``target`` always, ``hybrid`` until ``T_h`` (a step, a share of
the run, or the layer loss's plateau), then none (or, with ``keep_kd_after_switch``, its logits
alone)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import field_validator, model_validator

from cald_framework.contracts import (
    FrozenTeacherSchedule,
    GuidanceContext,
    LossWeights,
    NoOptions,
    StepPlan,
)

from .plateau import PlateauOptions, PlateauSwitch


class TargetSchedule(FrozenTeacherSchedule):
    """The fine-tuned target teacher gives targets at every step (Algorithm 1 of the paper)."""

    def __init__(self, options: NoOptions, context: GuidanceContext):
        super().__init__(context)
        self.weights = context.weights

    def plan(self, step: int) -> StepPlan:
        return self.plan_with(self.weights)

    def plan_with(self, weights: LossWeights) -> StepPlan:
        """A step with ``weights``; the target teacher is loaded when a term first needs it."""
        if not weights.needs_teacher:
            return StepPlan(weights, uses_teacher=False)
        if self.teacher is None:
            self.teacher = self.context.prepare_teacher(self.context.require("target")())
        return StepPlan(weights, uses_teacher=True)


class HybridOptions(PlateauOptions):
    #: guided steps: a number of steps, a fraction of the run in (0, 1), or ``"plateau"``:
    #: until the layer loss stops improving (see :mod:`.plateau` and its options)
    T_h: int | float | Literal["plateau"]
    #: after ``T_h`` keep the logit-distillation term (and so the teacher), dropping only the
    #: layer loss: the paper's TED-LIUM hybrid, whose code set only alpha_LD to 0 at the switch
    keep_kd_after_switch: bool = False

    @field_validator("T_h")
    @classmethod
    def _positive_fraction_below_one(cls, value: int | float | str) -> int | float | str:
        if isinstance(value, str):
            return value
        if value <= 0:
            raise ValueError("Input should be greater than 0")
        if isinstance(value, float) and value >= 1:
            raise ValueError(
                f"a fraction of the run must be below 1 (got {value}); write a whole number for steps"
            )
        return value

    @model_validator(mode="after")
    def _plateau_options_need_plateau(self) -> HybridOptions:
        stray = sorted(set(PlateauOptions.model_fields) & self.model_fields_set)
        if stray and self.T_h != "plateau":
            raise ValueError(f"{', '.join(stray)} applies only with T_h = \"plateau\"")
        return self

    def switch_step(self, total_steps: int) -> int | None:
        """The first unguided step; ``None`` while the switch waits for a plateau."""
        if self.T_h == "plateau":
            return None
        return round(self.T_h * total_steps) if isinstance(self.T_h, float) else self.T_h


class HybridSchedule(TargetSchedule):
    """Target guidance for the first ``T_h`` steps, then the task loss alone and no teacher
    (or the task and logit-distillation terms, when ``keep_kd_after_switch``)."""

    def __init__(self, options: HybridOptions, context: GuidanceContext):
        super().__init__(NoOptions(), context)
        self.switch = options.switch_step(context.total_steps)
        kept_kd = context.weights.kd if options.keep_kd_after_switch else 0.0
        self.after_switch = LossWeights(task=context.weights.task, kd=kept_kd)
        self.plateau: PlateauSwitch | None = None
        if self.switch is None:
            self.plateau = PlateauSwitch(options, context.weights)
            self.observes_losses = True  # the plateau switch follows the layer loss

    def plan(self, step: int) -> StepPlan:
        if self.switch is None or step < self.switch:
            return super().plan(step)
        if not self.after_switch.needs_teacher:
            self.teacher = None  # frees the teacher for the rest of the run
        return self.plan_with(self.after_switch)

    def observe(self, step: int, losses: Mapping[str, float]) -> Mapping[str, Any] | None:
        assert self.plateau is not None  # only plateau switches observe
        event = self.plateau.observe(step, losses)
        if event is not None:
            self.switch = event["switch_step"]
        return event

    def summary(self) -> dict[str, Any]:
        return {} if self.plateau is None else self.plateau.summary()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.plateau is None else {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
            fired = self.plateau.fired
            self.switch = None if fired is None else fired["switch_step"]
