"""Reading finished (or running) runs back from disk for the analyses.

A run directory holds the resolved ``spec.toml`` that the pipeline wrote, the student's
training checkpoints in ``checkpoints/step-XXXXXXXX/`` and, where the teacher was fine-tuned,
a ``waypoints.json`` manifest somewhere below it (the teacher cache). From the spec this module
rebuilds the pretrained source model and a fixed sample set of the task; from the checkpoints
and waypoints it makes lazily loaded :class:`Snapshot` objects. Weights are read only through
the engine's safetensors readers: never a pickle.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..assets import resolve_references
from ..contracts import PluginOptions, Task, TaskData
from ..conversion import convert
from ..engine.checkpoints import list_checkpoints, open_checkpoint
from ..engine.tensorfiles import read_tensors
from ..engine.waypoints import MANIFEST, read_waypoints
from ..errors import CaldError, CheckpointError
from ..layout import CHECKPOINTS_DIR, RESULTS_FILE, SPEC_FILE, parse_step
from ..modeling import CaldModel
from ..spec import ValidatedSpec, load_spec
from .hidden import Batch
from .snapshots import Snapshot



def find_spec(path: Path) -> Path:
    """The ``spec.toml`` of the run that ``path`` (a run, checkpoint or waypoint directory) is in."""
    if path.is_file():
        return path
    for directory in (path, *path.parents):
        if (directory / SPEC_FILE).is_file():
            return directory / SPEC_FILE
    raise CaldError(f"no {SPEC_FILE} in {path} or any directory above it; pass the spec with --spec")


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        # torch's message: a title line, then one line per kind of mismatch (the first shown)
        lines = [line.strip() for line in str(error).strip().splitlines()]
        detail = lines[min(1, len(lines) - 1)]
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise CheckpointError(
            f"{where} does not fit the model its run's spec builds: {detail}"
        ) from error
    return model


@dataclass
class Run:
    """A run's spec resolved to what the analyses need."""

    validated: ValidatedSpec
    #: the directory holding the spec (the run's output directory)
    directory: Path
    device: torch.device

    @classmethod
    def open(cls, path: Path, device: torch.device, spec: Path | None = None) -> Run:
        """The run that ``path`` belongs to; ``spec`` overrides the search for ``spec.toml``."""
        spec_path = spec or find_spec(path)
        return cls(load_spec(spec_path), spec_path.parent, device)

    @property
    def name(self) -> str:
        return self.validated.spec.experiment.name

    @cached_property
    def _task_options(self) -> PluginOptions:
        validated = self.validated
        options = validated.task_options.model_dump(exclude_unset=True)
        resolved = resolve_references(options, validated.spec.assets)
        return validated.task.options.model_validate(resolved)

    @cached_property
    def teacher_location(self) -> str:
        spec = self.validated.spec
        return resolve_references(spec.teacher.model, spec.assets)

    @cached_property
    def task(self) -> Task:
        return self.validated.task.build(self._task_options)

    @cached_property
    def data(self) -> TaskData:
        """The task's data, built as the pipeline builds it (same preprocessor and seed)."""
        preprocessor = self.validated.source.family().load_preprocessor(self.teacher_location)
        return self.task.build_data(preprocessor, self.validated.spec.experiment.seed)

    @cached_property
    def source_model(self) -> CaldModel:
        """The pretrained teacher with the task's head: where every run of this spec starts."""
        model = CaldModel.from_source(
            self.validated.spec.teacher.source,
            self.teacher_location,
            self.data.head,
            max_length=self.max_length,
            task_metadata=self.data.metadata,
            source=self.validated.source,
        )
        return model.to(self.device).eval()

    @property
    def max_length(self) -> int:
        """The student's ``max_length`` as the pipeline chooses it."""
        spec = self.validated.spec
        return spec.student.max_length or getattr(self._task_options, "max_length", None) or 0

    def samples(self, count: int, seed: int, batch_size: int) -> list[Batch]:
        """``count`` rows drawn with ``seed`` from the evaluation split (else training), batched."""
        dataset = self.data.eval if self.data.eval is not None else self.data.train
        chosen = sorted(random.Random(seed).sample(range(len(dataset)), min(count, len(dataset))))
        return [
            self.data.collate([dataset[index] for index in chosen[start : start + batch_size]])[
                "inputs"
            ]
            for start in range(0, len(chosen), batch_size)
        ]

    def training_batch(self, size: int) -> dict[str, Any]:
        """The first ``size`` training rows as one collated batch (inputs and labels)."""
        train = self.data.train
        return self.data.collate([train[index] for index in range(min(size, len(train)))])

    # ----------------------------------------------------------------- snapshots

    def _teacher_from(self, path: Path) -> CaldModel:
        return _load_weights(copy.deepcopy(self.source_model), read_tensors(path, self.device), path)

    def _student_from(self, path: Path) -> CaldModel:
        validated = self.validated
        student, _ = convert(
            self.source_model, validated.mixer, validated.mixer_options, self.max_length
        )
        state = open_checkpoint(path).part("model", self.device)
        return _load_weights(student, state, path)

    def waypoints(self, location: Path) -> list[Snapshot]:
        """The teacher fine-tuning snapshots listed by the manifest in ``location``."""
        label = f"{self.name}/teacher"
        return [
            Snapshot(label, waypoint.step, lambda path=waypoint.path: self._teacher_from(path))
            for waypoint in read_waypoints(location)
        ]

    def checkpoints(self, location: Path) -> list[Snapshot]:
        """The student's training checkpoints in ``location``, oldest first."""
        return [
            Snapshot(
                self.name,
                parse_step(path.name),
                lambda path=path: self._student_from(path),
            )
            for path in list_checkpoints(location)
        ]


    def teacher_waypoint_dirs(self) -> list[Path]:
        """Where this run's teacher waypoints are.

        The spec's ``teacher.waypoints`` if given; else the directory of the fine-tuned teacher
        that ``results.json`` names, if it holds a manifest; else every directory below the run
        directory that holds one (the default teacher cache lives there).
        """
        spec = self.validated.spec
        if spec.teacher.waypoints:
            return [Path(resolve_references(spec.teacher.waypoints, spec.assets))]
        results = self.directory / RESULTS_FILE
        if results.is_file():
            try:
                teacher = json.loads(results.read_text())["paths"]["teacher"]
            except (ValueError, KeyError, TypeError) as error:
                raise CaldError(f"{results} is unreadable: {error!r}") from error
            if (Path(teacher).parent / MANIFEST).is_file():
                return [Path(teacher).parent]
        return sorted(manifest.parent for manifest in self.directory.rglob(MANIFEST))


def checkpoint_dir(path: Path) -> Path:
    """``path`` itself if it holds checkpoints, else the ``checkpoints/`` of the run at ``path``."""
    return path if list_checkpoints(path) else path / CHECKPOINTS_DIR


def snapshots_at(run: Run, path: Path) -> list[Snapshot]:
    """Every snapshot found at ``path``.

    A waypoint directory (with ``waypoints.json``) gives the teacher's waypoints; a checkpoint
    directory (with ``step-*`` entries) the student's checkpoints; a run directory both: its
    ``checkpoints/`` and its teacher's waypoints (:meth:`Run.teacher_waypoint_dirs`).
    """
    if (path / MANIFEST).is_file():
        return run.waypoints(path)
    if list_checkpoints(path):
        return run.checkpoints(path)
    found = run.checkpoints(checkpoint_dir(path))
    for directory in run.teacher_waypoint_dirs():
        found += run.waypoints(directory)
    if not found:
        raise CaldError(
            f"{path} holds no checkpoints (step-* directories) and no {MANIFEST} of waypoints"
        )
    return found
