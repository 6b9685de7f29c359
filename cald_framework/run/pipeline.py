"""``run_pipeline``: the stages of a run in order, each a call to its own module.

spec -> plugins resolve names -> task builds the data -> source loads the teacher -> (teacher
fine-tuning, cached) -> mixer + source build the student -> (its mixers aligned alone on the
teacher's layer inputs) -> guidance decides the teacher at each
step -> engine trains, evaluates, checkpoints -> export + report.
"""

from __future__ import annotations

import time

from ..spec import ValidatedSpec
from .align import align_student
from .convert import convert_student, evaluate_converted
from .export import export_student, write_student_card
from .prepare import prepare, processes
from .report import RunResults, report_run
from .teachers import resolve_teachers
from .train import train_student


def run_pipeline(validated: ValidatedSpec, *, resume: bool = False) -> RunResults | None:
    """Run every stage the spec asks for and write ``results.json`` and ``report.md``.

    Under ``torchrun`` or ``accelerate launch`` every process trains; only the main one writes,
    exports and reports, and the others return ``None`` once training is done.
    """
    started = time.perf_counter()
    context = prepare(validated)
    teachers = resolve_teachers(context, resume)
    student = convert_student(context, teachers)
    main = processes().is_main_process
    initial_metrics = evaluate_converted(context, student) if main else {}
    alignment = align_student(context, teachers, student, resume=resume)
    trained = train_student(context, teachers, student, resume=resume)
    if not main:
        return None
    export_student(context, trained.model)
    results = report_run(context, teachers, trained, initial_metrics, started, alignment)
    write_student_card(context, trained.model, results)
    return results
