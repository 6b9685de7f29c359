"""Learning-rate schedules: a linear warm-up followed by a constant, linear, cosine or exponential phase.

:func:`lr_factor` is a pure function of the optimizer step, so the formulas can be checked on
their own; :func:`build_scheduler` wraps it in a ``LambdaLR`` whose state is plain JSON.

With ``W`` warm-up steps, ``S`` total steps, floor ``r = min_lr_ratio``, decay length
``D = decay_steps`` (default ``S - W``) and the decay progress ``p = min(1, (step - W) / max(1, D))``
(so after ``D`` decay steps the rate stays at its floor), the factor applied to ``lr`` at (0-based) ``step`` is:

* warm-up (``step < W``): ``(step + 1) / W``, so the last warm-up step reaches the full rate;
* ``constant``: ``1``;
* ``linear``: ``1 - p`` (zero at step ``S``);
* ``cosine``: ``r + (1 - r) * (1 + cos(pi * p)) / 2``;
* ``exponential``: ``r ** p`` (needs ``r > 0``).

An optimizer group with ``freeze_steps = N`` (:mod:`.param_groups`) gets factor 0 for its
first ``N`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..contracts import ScheduleName, lacks_schedule_floor
from ..errors import CaldError
from ..spec.sections import TrainingSection
from .param_groups import FREEZE_STEPS


def lr_factor(
    step: int,
    *,
    schedule: ScheduleName,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float = 0.0,
    decay_steps: int | None = None,
) -> float:
    """The multiple of the base learning rate used by the optimizer update at ``step``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_length = total_steps - warmup_steps if decay_steps is None else decay_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_length))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2
    return min_lr_ratio**progress


def warmup_steps_for(training: TrainingSection, total_steps: int) -> int:
    """``warmup_steps`` when set, else ``ceil(warmup_ratio * total_steps)``."""
    if training.warmup_steps is not None:
        return training.warmup_steps
    return math.ceil(training.warmup_ratio * total_steps)


def build_scheduler(optimizer: Optimizer, training: TrainingSection, total_steps: int) -> LambdaLR:
    """The schedule that ``training`` names, over ``total_steps`` optimizer updates."""
    if lacks_schedule_floor(training.schedule, training.min_lr_ratio):
        raise CaldError(
            "training.min_lr_ratio must be above 0 for the exponential schedule "
            "(it decays to lr * min_lr_ratio)"
        )
    factor = partial(
        lr_factor,
        schedule=training.schedule,
        total_steps=total_steps,
        warmup_steps=warmup_steps_for(training, total_steps),
        min_lr_ratio=training.min_lr_ratio,
        decay_steps=training.decay_steps,
    )
    factors = [
        partial(_after_freeze, factor, group[FREEZE_STEPS]) if group.get(FREEZE_STEPS) else factor
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, factors)


def _after_freeze(factor: Callable[[int], float], freeze_steps: int, step: int) -> float:
    """0 during a parameter group's first ``freeze_steps`` steps, then the schedule's factor."""
    return 0.0 if step < freeze_steps else factor(step)
