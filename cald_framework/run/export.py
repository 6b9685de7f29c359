"""The export stage: the trained student saved as a Hugging Face model directory, and its card."""

from __future__ import annotations

from pathlib import Path

from ..hf.card import render_model_card, write_model_card
from ..hf.directory import save_student
from ..layout import STUDENT_DIR
from ..lora import merge_lora
from ..modeling import CaldModel
from ..spec.toml_writer import dumps
from .prepare import RunContext
from .report import RunResults


def export_student(context: RunContext, student: CaldModel) -> Path:
    """Save ``student`` with what loading it needs (see
    :func:`~cald_framework.hf.directory.save_student`) into the run directory; returns where.

    LoRA adapters are merged into ``student`` first (in place), so the saved model needs no peft.
    """
    directory = context.output_dir / STUDENT_DIR
    merge_lora(student)
    save_student(student, directory, context.task.inference_preprocessor(context.preprocessor))
    return directory


def write_student_card(context: RunContext, student: CaldModel, results: RunResults) -> Path:
    """The exported student's ``README.md`` from the run's results and spec; returns its path."""
    document = context.validated.document
    card = render_model_card(
        results.to_dict(),
        student.config,
        student.family.modality,
        document.get("task", {}),
        dumps(document),
    )
    return write_model_card(context.output_dir / STUDENT_DIR, card)
