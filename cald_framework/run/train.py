"""The train stage: the student trained with the spec's guidance, evaluation and checkpoints."""

from __future__ import annotations

from ..engine.guidance import GuidanceSetup
from ..engine.precision import WEIGHT_DTYPES
from ..engine.trainer import TrainResult, train
from ..modeling import CaldModel
from .prepare import RunContext
from .teachers import RunTeachers, teacher_providers


def train_student(
    context: RunContext, teachers: RunTeachers, student: CaldModel, *, resume: bool
) -> TrainResult:
    """Train ``student`` in the run directory; every process of a multi-process run takes part.

    The student trains with its weights in ``student.dtype`` (aligned, if at all, in fp32).
    """
    validated = context.validated
    spec = validated.spec
    student.to(WEIGHT_DTYPES[spec.student.dtype])
    guidance = GuidanceSetup(
        validated.guidance, validated.guidance_options, teacher_providers(context, teachers)
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
