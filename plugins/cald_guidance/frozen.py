"""Modes with a frozen teacher: ``target`` always, ``hybrid`` until ``T_h``, then none (or,
with ``keep_kd_after_switch``, its logits alone)."""

from __future__ import annotations

from pydantic import Field, field_validator

from cald_framework.contracts import (
    FrozenTeacherSchedule,
    GuidanceContext,
    LossWeights,
    NoOptions,
    PluginOptions,
    StepPlan,
)


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


class HybridOptions(PluginOptions):
    #: guided steps: a number of steps, or a fraction of the run in (0, 1)
    T_h: int | float = Field(gt=0)
    #: after ``T_h`` keep the logit-distillation term (and so the teacher), dropping only the
    #: layer loss: the paper's TED-LIUM hybrid, whose code set only alpha_LD to 0 at the switch
    keep_kd_after_switch: bool = False

    @field_validator("T_h")
    @classmethod
    def _fraction_below_one(cls, value: int | float) -> int | float:
        if isinstance(value, float) and value >= 1:
            raise ValueError(
                f"a fraction of the run must be below 1 (got {value}); write a whole number for steps"
            )
        return value

    def switch_step(self, total_steps: int) -> int:
        """The first unguided step."""
        return round(self.T_h * total_steps) if isinstance(self.T_h, float) else self.T_h


class HybridSchedule(TargetSchedule):
    """Target guidance for the first ``T_h`` steps, then the task loss alone and no teacher
    (or the task and logit-distillation terms, when ``keep_kd_after_switch``)."""

    def __init__(self, options: HybridOptions, context: GuidanceContext):
        super().__init__(NoOptions(), context)
        self.switch = options.switch_step(context.total_steps)
        kept_kd = context.weights.kd if options.keep_kd_after_switch else 0.0
        self.after_switch = LossWeights(task=context.weights.task, kd=kept_kd)

    def plan(self, step: int) -> StepPlan:
        if step < self.switch:
            return super().plan(step)
        if not self.after_switch.needs_teacher:
            self.teacher = None  # frees the teacher for the rest of the run
        return self.plan_with(self.after_switch)
