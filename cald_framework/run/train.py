"""The train stage: the student trained with the spec's guidance, evaluation and checkpoints."""

from __future__ import annotations

import logging

from ..engine.guidance import GuidanceSetup
from ..engine.precision import WEIGHT_DTYPES
from ..engine.trainer import TrainResult, train
from ..lora import add_lora
from ..modeling import CaldModel
from .prepare import RunContext, seeded
from .teachers import RunTeachers, teacher_providers

logger = logging.getLogger(__name__)


def train_student(
    context: RunContext, teachers: RunTeachers, student: CaldModel, *, resume: bool
) -> TrainResult:
    """Train ``student`` in the run directory; every process of a multi-process run takes part.

    With ``[student.lora]`` the student gets its adapters here, from the spec's seed, after
    alignment (which trains the mixers only) and before the trainer restores any checkpoint.
    The student trains with its weights in ``student.dtype`` (aligned, if at all, in fp32).
    """
    validated = context.validated
    spec = validated.spec
    student.to(WEIGHT_DTYPES[spec.student.dtype])
    if spec.student.lora is not None:
        with seeded(spec.experiment.seed):
            summary = add_lora(student, spec.student.lora)
        logger.info(
            "LoRA on %d layers: %s of %s parameters trainable",
            len(summary.adapted),
            f"{summary.trainable_parameters:,}",
            f"{summary.total_parameters:,}",
        )
    guidance = GuidanceSetup(
        validated.guidance,
        validated.guidance_options,
        teacher_providers(context, teachers),
        teacher_training=validated.teacher_training,
    )
    return train(
        student,
        context.task,
        context.data,
        training=spec.training,
        evaluation=spec.evaluation,
        loss=context.loss,
        guidance=guidance,
        extractor=context.extractor(),
        output_dir=context.output_dir,
        seed=spec.experiment.seed,
        resume=resume,
    )
