"""The export stage: the trained student saved as a Hugging Face model directory."""

from __future__ import annotations

from pathlib import Path

from ..layout import STUDENT_DIR
from ..lora import merge_lora
from ..modeling import CaldModel
from .prepare import RunContext


def export_student(context: RunContext, student: CaldModel) -> Path:
    """Save ``student`` (``save_pretrained``) into the run directory; returns where.

    LoRA adapters are merged into ``student`` first (in place), so the saved model needs no peft.
    """
    directory = context.output_dir / STUDENT_DIR
    merge_lora(student)
    student.save_pretrained(directory)
    return directory
