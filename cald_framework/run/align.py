"""The align stage: with ``guidance.align_steps``, each mixer first learns its attention alone.

It runs between conversion and training, whatever the guidance mode: the mixers are trained,
teacher-forced, to reproduce the attention they replaced (:mod:`cald_framework.engine.alignment`),
then the student is evaluated once more, and the chosen mode trains it as it would have.
"""

from __future__ import annotations

import torch

from ..engine.alignment import Aligner, AlignmentResult, AlignmentRun, align, layer_pairs
from ..engine.evaluation import evaluate_model
from ..engine.logbook import keep_events
from ..layout import ALIGNMENT_DIR, METRICS_FILE
from ..modeling import CaldModel
from .prepare import RunContext, processes
from .teachers import RunTeachers


def replaced_attention_model(context: RunContext, teachers: RunTeachers) -> CaldModel:
    """The model whose attention the student's mixers replaced (see ``convert_student``).

    The target teacher, unless there is none or ``student.init = "source"`` started the
    student from the pretrained model: then the pretrained model.
    """
    if teachers.target is None or context.validated.student_init == "source":
        return context.source_model
    return teachers.target


def align_student(
    context: RunContext, teachers: RunTeachers, student: CaldModel, *, resume: bool
) -> AlignmentResult | None:
    """Align ``student``'s mixers in place; ``None`` when the spec asks for no alignment.

    A run started afresh first clears the ``metrics.jsonl`` of an earlier run in the directory,
    since training keeps the alignment events it finds there.
    """
    spec = context.spec
    main = processes().is_main_process
    metrics = context.output_dir / METRICS_FILE
    if main and not resume:
        keep_events(metrics, lambda event: False)
    steps = spec.guidance.align_steps
    if steps == 0:
        return None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher = replaced_attention_model(context, teachers).to(device)
    student.to(device)
    training = spec.training
    lr = spec.guidance.align_lr or training.lr
    aligner = Aligner(teacher, layer_pairs(teacher, student), training, lr)
    run = AlignmentRun(
        checkpoints=context.output_dir / ALIGNMENT_DIR,
        output_dir=context.output_dir,
        training=training,
        steps=steps,
        lr=lr,
        seed=spec.experiment.seed,
        main=main,
    )

    def evaluate() -> dict[str, float]:
        return evaluate_model(student, context.task, context.data, training) if main else {}

    return align(aligner, context.data, run, device=device, resume=resume, evaluate=evaluate)
