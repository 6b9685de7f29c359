"""What each guidance mode adds to a training step, relative to unguided training.

Every mode is timed on the engine's own step, :meth:`~cald_framework.engine.Trainer.step`:
the student's forward, losses, backward, clipping and AdamW update with the run's training and
distillation settings (precision, clipping, temperature, reductions), plus

* ``target`` (also ``waypoint`` and ``hybrid`` before its switch): a frozen teacher forward in
  inference mode, logit KD and layerwise MSE;
* ``trajectory``: the same with a teacher forward *with* gradients every ``T_u``-th step, and
  the teacher's own backward and update after it.

Hybrid after its switch is an unguided step. Both distillation terms are on (at weight 1:
time does not depend on the weights). Times are means over whole ``T_u`` cycles.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ..contracts import (
    AvailableTeachers,
    CaldOutput,
    ExtractedStates,
    Extractor,
    LossWeights,
    Task,
    TaskData,
)
from ..engine import GuidanceSetup, LossConfig, Trainer
from ..plugin_manager import load_registries
from ..spec.sections import EvaluationSection, TrainingSection
from .measure import clock_for, synchronize


def _every_layer(output: CaldOutput) -> ExtractedStates:
    """The default extractor: every hidden state after the embeddings, as they are."""
    return ExtractedStates(list(output.hidden_states[1:]), output.hidden_mask)


def _mean_step_seconds(trainer: Trainer, batch: Mapping[str, Any], steps: int, clock: str) -> float:
    now = clock_for(clock, trainer.device)
    trainer.step([batch])  # warm-up: allocates the optimizer state
    synchronize(trainer.device)
    start = now()
    for _ in range(steps):
        trainer.step([batch])
    synchronize(trainer.device)
    return (now() - start) / steps


def guidance_overhead(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    data: TaskData,
    batch: Mapping[str, Any],
    *,
    training: TrainingSection | None = None,
    loss: LossConfig | None = None,
    extractor: Extractor | None = None,
    steps: int = 4,
    update_every: int = 4,
    clock: str = "wall",
) -> list[dict[str, Any]]:
    """Rows ``mode, ms_per_step, vs_unguided`` for unguided, frozen-teacher and trajectory steps.

    Each step trains on ``batch`` (one micro-batch); ``data`` only sizes the trainer's run.
    ``training`` and ``loss`` default to the engine's defaults, ``extractor`` to every hidden
    state after the embeddings. ``steps`` is rounded up to whole cycles of ``update_every``
    (the trajectory's ``T_u``); times are read by ``clock`` (see :data:`.measure.CLOCKS`).
    The models given are not modified: each mode trains copies.
    """
    steps = math.ceil(steps / update_every) * update_every
    training = (training or TrainingSection()).model_copy(
        update={"grad_accum": 1, "max_steps": steps + 1, "save_every": None}
    )
    loss = replace(loss or LossConfig(), weights=LossWeights(task=1.0, kd=1.0, ld=1.0))
    teachers = AvailableTeachers(
        source=lambda: copy.deepcopy(teacher), target=lambda: copy.deepcopy(teacher)
    )
    modes = load_registries().guidance
    target, trajectory = modes.get("target"), modes.get("trajectory")
    setups = {
        "unguided": None,
        "target / waypoint / hybrid": GuidanceSetup(target, target.options(), teachers),
        f"trajectory (T_u={update_every})": GuidanceSetup(
            trajectory, trajectory.options(T_u=update_every), teachers
        ),
    }
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        for mode, setup in setups.items():
            trainer = Trainer(
                copy.deepcopy(student), task, data, training=training,
                evaluation=EvaluationSection(), loss=loss, output_dir=Path(directory), seed=0,
                guidance=setup, extractor=extractor or _every_layer,
            )
            seconds[mode] = _mean_step_seconds(trainer, batch, steps, clock)
    baseline = seconds["unguided"]
    return [
        {"mode": mode, "ms_per_step": value * 1000, "vs_unguided": value / baseline}
        for mode, value in seconds.items()
    ]
