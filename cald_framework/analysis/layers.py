"""``analyze layers``: how well each layer converts, to choose the layers that keep attention.

The spec's student is converted, its mixers aligned for a few steps (the same teacher-forced
alignment as ``guidance.align_steps``), and each layer's residual is measured on held-out
batches: the relative error of the mixer against the attention it replaced, teacher-forced
(:func:`~cald_framework.engine.alignment.residuals`). The layers with the largest residual are
the ones a hybrid student should keep as attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..engine.alignment import AlignProgress, Aligner, alignment_batches, layer_pairs, residuals
from ..engine.batching import to_device
from ..modeling import CaldModel
from ..run.convert import build_student
from ..run.prepare import RunContext
from ..run.teachers import available_target_dir

#: alignment steps before measuring when neither ``--steps`` nor ``guidance.align_steps`` says
DEFAULT_STEPS = 100


def ranking_teacher(context: RunContext) -> CaldModel:
    """The fine-tuned teacher the spec's runs convert (``teacher.target``, or the teacher
    cache's when a run has fine-tuned it), else the pretrained model.

    The ranking never fine-tunes a teacher: conversion error is a property of the attention,
    which fine-tuning changes little.
    """
    target = available_target_dir(context)
    return CaldModel.from_pretrained(target) if target else context.source_model


def rank_layers(
    context: RunContext,
    held_out: Sequence[Mapping[str, torch.Tensor]],
    *,
    steps: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Rows ``{rank, layer, residual}``, the worst-converted layer first."""
    teacher = ranking_teacher(context).to(device).eval()
    student, _ = build_student(context, teacher)
    student.to(device)
    pairs = layer_pairs(teacher, student)
    training = context.spec.training
    aligner = Aligner(teacher, pairs, training, context.spec.guidance.align_lr or training.lr)
    batches = alignment_batches(context.data, training, context.spec.experiment.seed, AlignProgress())
    for _ in range(steps):
        aligner.step(to_device(next(batches)["inputs"], device))
    measured = residuals(teacher, pairs, [to_device(batch, device) for batch in held_out])
    order = sorted(zip(aligner.layers, measured), key=lambda item: -item[1])
    return [
        {"rank": rank, "layer": layer, "residual": residual}
        for rank, (layer, residual) in enumerate(order, start=1)
    ]


def keep_line(rows: Sequence[Mapping[str, Any]], keep: int) -> str:
    """The spec line that keeps the ``keep`` worst-converted layers as attention."""
    chosen = sorted(int(row["layer"]) for row in rows[:keep])
    return f"keep_attention = [{', '.join(map(str, chosen))}]"
