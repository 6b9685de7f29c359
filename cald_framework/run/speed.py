"""Speed for the report: one forward pass of teacher and student on the same evaluation batch."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..contracts import TaskData


@dataclass
class SpeedComparison:
    """One forward pass of teacher and student at the task's length, median over repeats."""

    batch_size: int
    length: int
    teacher_ms: float
    student_ms: float

    @property
    def speedup(self) -> float:
        """How many times faster the student is (``nan`` if it took no measurable time)."""
        return self.teacher_ms / self.student_ms if self.student_ms > 0 else float("nan")


def _median_forward_ms(model: torch.nn.Module, batch: dict[str, Any], repeats: int = 5) -> float:
    inputs = batch["inputs"]
    timings = []
    with torch.inference_mode():
        model(**inputs)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(**inputs)
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def measure_speed(
    teacher: torch.nn.Module, student: torch.nn.Module, batch: dict[str, Any]
) -> SpeedComparison:
    """One forward pass of each on the same batch, median of repeats after a warm-up."""
    teacher.eval()
    student.eval()
    first = next(iter(batch["inputs"].values()))
    return SpeedComparison(
        batch_size=int(first.shape[0]),
        length=int(first.shape[1]),
        teacher_ms=_median_forward_ms(teacher, batch),
        student_ms=_median_forward_ms(student, batch),
    )


def speed_batch(data: TaskData, size: int) -> dict[str, Any]:
    """The first ``size`` evaluation rows, collated: the batch both models are timed on."""
    rows = [data.eval[index] for index in range(min(size, len(data.eval)))]
    return data.collate(rows)
