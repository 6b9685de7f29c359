"""The convert stage: the student built from a teacher, its attention replaced by the mixers."""

from __future__ import annotations

from ..conversion import TransferReport, convert
from ..engine.evaluation import evaluate_model
from ..errors import CaldError
from ..layout import TRANSFER_REPORT_FILE
from ..modeling import CaldModel
from .prepare import RunContext, processes, seeded
from .teachers import RunTeachers


def build_student(
    context: RunContext, teacher: CaldModel, *, init_from: CaldModel | None = None
) -> tuple[CaldModel, TransferReport]:
    """The spec's student converted from ``teacher``, its new weights drawn from the spec's seed.

    With no ``max_length`` (``None``) the mixers get 0: no limit on the sequence length. The
    layers in ``student.keep_attention`` keep their attention. Its backbone config takes
    ``[student.config]`` in place of the teacher's ``[teacher.config]``.
    """
    validated = context.validated
    max_length = 0 if context.max_length is None else context.max_length
    with seeded(context.spec.experiment.seed):
        student, transfer = convert(
            teacher,
            validated.mixer,
            validated.mixer_options,
            max_length,
            init_from=init_from,
            keep_attention=context.spec.student.keep_attention,
        )
    overrides = context.spec.student.config
    if student.config.config_overrides != overrides:
        student = student.reconfigured(overrides)
    return student, transfer


def convert_student(context: RunContext, teachers: RunTeachers) -> CaldModel:
    """Convert the target teacher (else the pretrained one); the main process writes the
    transfer report.

    ``student.init = "source"`` with a target teacher starts the student from the pretrained
    weights, while the target teacher stays the model it distils from.
    """
    init = context.validated.student_init
    if init == "target" and teachers.target is None:
        raise CaldError("student.init = 'target' needs a target teacher, but none was produced")
    source = context.source_model
    target = teachers.target
    convert_from = source if target is None else target
    init_from = source if (init == "source" and target is not None) else None
    student, transfer = build_student(context, convert_from, init_from=init_from)
    if processes().is_main_process:
        transfer.save(context.output_dir / TRANSFER_REPORT_FILE)
    return student


def evaluate_converted(context: RunContext, student: CaldModel) -> dict[str, float]:
    """The student's metrics right after conversion, before any training: what conversion cost.

    Run before the trainer seeds its random streams, so training is the same with or without it.
    """
    return evaluate_model(student, context.task, context.data, context.spec.training)
