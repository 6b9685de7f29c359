"""Fine-tuning the teacher on the task: the target teacher and the waypoints along the way.

It is the same loop as the student's, without a teacher (task loss only). After each step
``k * (S // n)`` the weights are saved as a waypoint (before that step's checkpoint, so a
resumed run never misses one), and ``waypoints.json`` lists those saved so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from torch import nn

from ..contracts import LossWeights, Task, TaskData, Waypoint
from ..layout import TARGET_DIR, WAYPOINT_MANIFEST, WAYPOINTS_DIR, waypoint_file
from ..spec.sections import EvaluationSection, TrainingSection
from .losses import LossConfig
from .tensorfiles import write_tensors
from .trainer import StepEnd, train
from .waypoints import read_waypoints, waypoint_steps, write_manifest


@dataclass(frozen=True)
class FinetuneResult:
    #: the fine-tuned teacher (``save_pretrained`` format, or ``model.safetensors``)
    target_dir: Path
    #: ``waypoints.json``, listing the waypoint files by step
    manifest_path: Path
    waypoints: list[Waypoint]
    #: evaluation metrics of the saved target
    metrics: dict[str, float]
    #: training time of the fine-tuning run (kept in the cache for reports of later runs)
    wall_seconds: float | None = None

    def to_dict(self, directory: Path) -> dict[str, Any]:
        """JSON-ready, with paths relative to ``directory`` so that the run can move."""
        return {
            "target_dir": self.target_dir.relative_to(directory).as_posix(),
            "manifest_path": self.manifest_path.relative_to(directory).as_posix(),
            "metrics": self.metrics,
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], directory: Path) -> FinetuneResult:
        """The inverse of :meth:`to_dict`; the waypoints are read back from the manifest."""
        manifest = directory / data["manifest_path"]
        return cls(
            directory / data["target_dir"],
            manifest,
            read_waypoints(manifest),
            data["metrics"],
            data.get("wall_seconds"),
        )


class _WaypointSaver:
    """The ``on_step_end`` callback that saves the waypoints and rewrites the manifest."""

    def __init__(self, output_dir: Path, count: int):
        self.output_dir = output_dir
        self.count = count

    def _path(self, step: int) -> Path:
        return self.output_dir / WAYPOINTS_DIR / waypoint_file(step)

    def __call__(self, end: StepEnd) -> None:
        steps = waypoint_steps(end.total_steps, self.count)
        if end.step not in steps or not end.is_main_process:
            return
        write_tensors(self._path(end.step), end.model.state_dict())
        waypoints = [Waypoint(s, self._path(s)) for s in steps if s <= end.step]
        write_manifest(self.output_dir, end.total_steps, waypoints)


def save_model(model: nn.Module, directory: Path) -> None:
    """``save_pretrained`` when the model has it, else its state dict as ``model.safetensors``."""
    save_pretrained = getattr(model, "save_pretrained", None)
    if callable(save_pretrained):
        save_pretrained(directory)
    else:
        write_tensors(directory / "model.safetensors", model.state_dict())


def finetune_teacher(
    teacher: nn.Module,
    task: Task,
    data: TaskData,
    *,
    training: TrainingSection,
    evaluation: EvaluationSection,
    output_dir: Path,
    num_waypoints: int,
    seed: int,
    resume: bool = False,
) -> FinetuneResult:
    """Fine-tune ``teacher`` (the source model with the task's head) and save target and waypoints."""
    output_dir = Path(output_dir)
    result = train(
        teacher,
        task,
        data,
        training=training,
        evaluation=evaluation,
        loss=LossConfig(weights=LossWeights(task=1.0)),
        output_dir=output_dir,
        seed=seed,
        resume=resume,
        on_step_end=_WaypointSaver(output_dir, num_waypoints),
    )
    state = PartialState()
    target_dir = output_dir / TARGET_DIR
    if state.is_main_process:
        save_model(teacher, target_dir)
    state.wait_for_everyone()
    manifest = output_dir / WAYPOINT_MANIFEST
    return FinetuneResult(
        target_dir, manifest, read_waypoints(manifest), result.metrics, result.wall_seconds
    )
