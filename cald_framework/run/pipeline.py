"""``run_pipeline``: the stages of a run in order, each a call to its own module.

spec -> plugins resolve names -> task builds the data -> source loads the teacher -> (teacher
fine-tuning, cached) -> (``auto`` guidance picks its mode from the teacher's drift) -> mixer +
source build the student -> (its mixers aligned alone on the
teacher's layer inputs) -> guidance decides the teacher at each
step -> engine trains, evaluates, checkpoints -> export + report.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from ..locks import holding
from ..spec import ValidatedSpec
from .align import align_student
from .choose import choose_guidance, log_choice
from .convert import convert_student, evaluate_converted
from .export import export_student, write_student_card
from .prepare import prepare, processes
from .report import RunResults, report_run
from .teachers import resolve_teachers
from .train import train_student

#: the lock file of a run in its output directory
RUN_LOCK = "run.lock"


def run_pipeline(validated: ValidatedSpec, *, resume: bool = False) -> RunResults | None:
    """Run every stage the spec asks for and write ``results.json`` and ``report.md``.

    Under ``torchrun`` or ``accelerate launch`` every process trains; only the main one writes,
    exports and reports, and the others return ``None`` once training is done. The main process
    holds the output directory's lock (:data:`RUN_LOCK`) throughout: a second run into the same
    directory is refused with one line naming the owner.
    """
    output_dir = Path(validated.spec.experiment.output_dir)
    main = processes().is_main_process
    lock = holding(output_dir / RUN_LOCK, f"output_dir {output_dir}") if main else nullcontext()
    with lock:
        return _run_stages(validated, resume)


def _run_stages(validated: ValidatedSpec, resume: bool) -> RunResults | None:
    started = time.perf_counter()
    context = prepare(validated)
    teachers = resolve_teachers(context, resume)
    choice = choose_guidance(context, teachers, resume=resume)
    student = convert_student(context, teachers)
    main = processes().is_main_process
    initial_metrics = evaluate_converted(context, student) if main else {}
    alignment = align_student(context, teachers, student, resume=resume)
    if choice is not None:
        log_choice(context, choice)
    trained = train_student(context, teachers, student, resume=resume)
    if not main:
        return None
    export_student(context, trained.model)
    results = report_run(context, teachers, trained, initial_metrics, started, alignment, choice)
    write_student_card(context, trained.model, results)
    return results
