"""The results of a run: ``results.json`` (machine-readable) and ``report.md`` (for people).

The shape of ``results.json`` is documented in the README; change both together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic, write_text_atomic
from .layout import REPORT_FILE, RESULTS_FILE

RESULTS_FORMAT = 1


@dataclass
class SpeedComparison:
    """One forward pass of teacher and student at the task's length, median over repeats."""

    batch_size: int
    length: int
    teacher_ms: float
    student_ms: float

    @property
    def speedup(self) -> float:
        return self.teacher_ms / self.student_ms if self.student_ms > 0 else float("nan")


@dataclass
class RunResults:
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
    teacher_parameters: int
    student_parameters: int
    steps: int
    train_wall_seconds: float
    total_wall_seconds: float
    #: ``None`` when the target teacher came from the spec or from the cache
    teacher_finetune_wall_seconds: float | None = None
    speed: SpeedComparison | None = None
    paths: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
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


def render_markdown(results: RunResults) -> str:
    metrics = sorted(set(results.teacher_metrics) | set(results.student_metrics))
    lines = [
        f"# {results.experiment}",
        "",
        f"{results.source} teacher -> {results.mixer} student, task `{results.task}`, "
        f"guidance `{results.mode}`, student initialised from the {results.student_init} weights.",
        "",
        "| | teacher | student |",
        "|---|---|---|",
    ]
    for metric in metrics:
        lines.append(
            f"| {metric} | {_format_metric(results.teacher_metrics.get(metric))} "
            f"| {_format_metric(results.student_metrics.get(metric))} |"
        )
    lines.append(f"| parameters | {results.teacher_parameters:,} | {results.student_parameters:,} |")
    if results.speed is not None:
        speed = results.speed
        lines.append(
            f"| forward ms (batch {speed.batch_size} x {speed.length}) "
            f"| {speed.teacher_ms:.1f} | {speed.student_ms:.1f} ({speed.speedup:.2f}x) |"
        )
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
