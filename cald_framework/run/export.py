"""The export stage: the trained student saved as a Hugging Face model directory."""

from __future__ import annotations

from pathlib import Path

from ..hf.directory import save_student
from ..layout import STUDENT_DIR
from ..modeling import CaldModel
from .prepare import RunContext


def export_student(context: RunContext, student: CaldModel) -> Path:
    """Save ``student`` with what loading it needs (see
    :func:`~cald_framework.hf.directory.save_student`) into the run directory; returns where."""
    directory = context.output_dir / STUDENT_DIR
    save_student(student, directory, context.task.inference_preprocessor(context.preprocessor))
    return directory
