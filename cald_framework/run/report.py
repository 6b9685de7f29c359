"""The report stage: ``results.json`` (machine-readable) and ``report.md`` (for people).

The shape of ``results.json`` is documented in the README; change both together.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from .. import __version__
from ..atomic import write_json_atomic, write_text_atomic
from ..conversion import parameter_count
from ..engine.alignment import AlignmentResult
from ..engine.evaluation import evaluate_model
from ..engine.trainer import TrainResult
from ..layout import METRICS_FILE, REPORT_FILE, RESULTS_FILE, STUDENT_DIR, TRANSFER_REPORT_FILE
from .choose import GuidanceChoice
from .prepare import RunContext
from .speed import SpeedComparison, measure_speed, speed_batch
from .teachers import RunTeachers

RESULTS_FORMAT = 1


@dataclass
class RunResults:
    """What a finished run reports: the fields of ``results.json``."""

    experiment: str
    task: str
    mode: str
    source: str
    mixer: str
    student_init: str
    primary_metric: str
    higher_is_better: bool
    teacher_metrics: dict[str, float]
    student_metrics: dict[str, float]
    #: the student's metrics right after conversion, before any training
    initial_student_metrics: dict[str, float]
    teacher_parameters: int
    student_parameters: int
    steps: int
    train_wall_seconds: float
    total_wall_seconds: float
    #: ``None`` when the target teacher came from the spec or from the cache
    teacher_finetune_wall_seconds: float | None = None
    #: layers where the student kept the teacher's attention (empty: every layer converted)
    kept_attention: list[int] = field(default_factory=list)
    speed: SpeedComparison | None = None
    #: the student's metrics after the alignment before training; ``None`` without alignment
    aligned_student_metrics: dict[str, float] | None = None
    #: the alignment stage's wall time; ``None`` without alignment
    align_wall_seconds: float | None = None
    #: what ``guidance.mode = "auto"`` chose (``mode``) and why, with the drift it measured;
    #: ``None`` for a mode the spec names
    guidance_choice: dict[str, Any] | None = None
    #: what the guidance schedule decided while training (e.g. hybrid's plateau switch)
    guidance_summary: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, with its format number and the derived speed-up included."""
        data = asdict(self)
        if self.speed is not None:
            data["speed"]["speedup"] = self.speed.speedup
        return {"format": RESULTS_FORMAT, **data}

    def summary(self) -> dict[str, Any]:
        """The few numbers the CLI prints at the end of a run."""
        metric = self.primary_metric
        return {
            "experiment": self.experiment,
            "mode": self.mode,
            f"teacher_{metric}": self.teacher_metrics.get(metric),
            f"student_{metric}": self.student_metrics.get(metric),
            "speedup": None if self.speed is None else round(self.speed.speedup, 3),
            "results": self.paths.get("results"),
        }


def _format_metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _kept_line(kept: list[int]) -> str:
    if not kept:
        return "Every attention layer was converted."
    return f"Layers {', '.join(map(str, kept))} kept the teacher's attention (a hybrid student)."


def _drift_table(rows: list[dict[str, Any]]) -> list[str]:
    layers = sum(1 for key in rows[0] if key.startswith("layer_"))
    header = ["teacher step", "mean (1..L)", *(f"layer {i}" for i in range(layers))]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        cells = [str(row["step"]), *(f"{row[key]:.4f}" for key in ["mean", *(f"layer_{i}" for i in range(layers))])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _guidance_lines(results: RunResults) -> list[str]:
    """The guidance section: the mode ``auto`` chose and why, and a switch made while training."""
    choice, summary = results.guidance_choice, results.guidance_summary
    if choice is None and not summary.get("reason"):
        return []
    lines = ["", "## Guidance", ""]
    if choice is not None:
        lines += [f"`{choice['chooser']}` chose `{choice['mode']}`: {choice['reason']}.", ""]
        lines += ["Hidden-state drift of the teacher's waypoints from the pretrained model "
                  "(mean cosine distance):", ""]
        lines += _drift_table(choice["drift"])
        lines.append("")
    if summary.get("reason"):
        lines.append(f"Switch: {summary['reason']}.")
    return lines


def render_markdown(results: RunResults) -> str:
    """``report.md``: teacher and student side by side, for people reading the run."""
    columns = {
        "teacher": results.teacher_metrics,
        "student after conversion": results.initial_student_metrics,
    }
    if results.aligned_student_metrics is not None:
        columns["student after alignment"] = results.aligned_student_metrics
    columns["student"] = results.student_metrics
    metrics = sorted(set().union(*columns.values()))
    gap = "| " * (len(columns) - 2)
    lines = [
        f"# {results.experiment}",
        "",
        f"{results.source} teacher -> {results.mixer} student, task `{results.task}`, "
        f"guidance `{results.mode}`, student initialised from the {results.student_init} weights.",
        _kept_line(results.kept_attention),
        "",
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for metric in metrics:
        cells = " | ".join(_format_metric(values.get(metric)) for values in columns.values())
        lines.append(f"| {metric} | {cells} |")
    lines.append(
        f"| parameters | {results.teacher_parameters:,} {gap}| {results.student_parameters:,} |"
    )
    if results.speed is not None:
        speed = results.speed
        lines.append(
            f"| forward ms (batch {speed.batch_size} x {speed.length}) "
            f"| {speed.teacher_ms:.1f} {gap}| {speed.student_ms:.1f} ({speed.speedup:.2f}x) |"
        )
    lines += _guidance_lines(results)
    lines += [
        "",
        f"Training: {results.steps} steps in {results.train_wall_seconds:.0f} s; "
        f"whole run {results.total_wall_seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def write_results(results: RunResults, output_dir: Path) -> None:
    """Write ``results.json`` and ``report.md`` into ``output_dir``."""
    results.paths["results"] = str(output_dir / RESULTS_FILE)
    results.paths["report"] = str(output_dir / REPORT_FILE)
    write_json_atomic(output_dir / RESULTS_FILE, results.to_dict(), indent=2)
    write_text_atomic(output_dir / REPORT_FILE, render_markdown(results))


def report_run(
    context: RunContext,
    teachers: RunTeachers,
    trained: TrainResult,
    initial_metrics: dict[str, float],
    started: float,
    alignment: AlignmentResult | None = None,
    choice: GuidanceChoice | None = None,
) -> RunResults:
    """Compare the trained student with its reference teacher and write the results.

    The reference teacher is the target teacher, else the one trained alongside the student,
    else the pretrained one; ``initial_metrics`` are the student's right after conversion;
    ``started`` is the ``time.perf_counter()`` of the run's start; ``alignment`` is what the
    alignment stage did (``None`` when the run had none); ``choice`` what ``auto`` guidance
    chose (``None`` when the spec names its mode).
    """
    validated = context.validated
    spec = validated.spec
    student = trained.model
    reference = teachers.target or trained.trained_teacher or context.source_model
    teacher_metrics = (
        evaluate_model(reference, context.task, context.data, spec.training)
        if spec.evaluation.evaluate_teacher
        else {}
    )
    speed = measure_speed(reference, student, speed_batch(context.data, spec.training.batch_size))
    output_dir = context.output_dir
    results = RunResults(
        experiment=spec.experiment.name,
        task=spec.task.kind,
        mode=validated.guidance.name,
        source=spec.teacher.source,
        mixer=validated.mixer.name,
        student_init=validated.student_init,
        primary_metric=trained.metric,
        higher_is_better=context.task.higher_is_better,
        teacher_metrics=teacher_metrics,
        student_metrics=trained.metrics,
        initial_student_metrics=initial_metrics,
        aligned_student_metrics=None if alignment is None else alignment.metrics,
        align_wall_seconds=None if alignment is None else alignment.wall_seconds,
        guidance_choice=None if choice is None else asdict(choice),
        guidance_summary=trained.guidance_summary,
        teacher_parameters=parameter_count(reference),
        student_parameters=parameter_count(student),
        steps=trained.steps,
        train_wall_seconds=trained.wall_seconds,
        total_wall_seconds=time.perf_counter() - started,
        teacher_finetune_wall_seconds=teachers.finetune_seconds,
        kept_attention=list(student.config.kept_attention),
        speed=speed,
        paths={
            "student": str(output_dir / STUDENT_DIR),
            "transfer_report": str(output_dir / TRANSFER_REPORT_FILE),
            "metrics": str(output_dir / METRICS_FILE),
            "teacher": str(teachers.target_dir or context.teacher_model),
        },
        versions={
            "cald_framework": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    )
    write_results(results, output_dir)
    return results
