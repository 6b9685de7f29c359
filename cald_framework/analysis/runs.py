"""Reading finished (or running) runs back from disk for the analyses.

A run directory holds the resolved ``spec.toml`` that the pipeline wrote, the student's
training checkpoints in ``checkpoints/step-XXXXXXXX/`` and, where the teacher was fine-tuned,
a ``waypoints.json`` manifest somewhere below it (the teacher cache). From the spec, the
pipeline's own :class:`~cald_framework.run.prepare.RunContext` rebuilds the task, its data and
the pretrained source model; from the checkpoints and waypoints this module makes lazily loaded
:class:`Snapshot` objects. Weights are read only through
the engine's safetensors readers: never a pickle.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.checkpoints import list_checkpoints, open_checkpoint
from ..engine.tensorfiles import read_tensors
from ..engine.waypoints import read_waypoints
from ..errors import CaldError, CheckpointError
from ..layout import CHECKPOINTS_DIR, RESULTS_FILE, SPEC_FILE, WAYPOINT_MANIFEST, parse_step
from ..modeling import CaldModel
from ..run.convert import build_student
from ..run.prepare import RunContext, resolve_assets
from ..spec import ValidatedSpec, load_spec
from .hidden import Batch, sample_inputs
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


class RunDirectory:
    """A run directory read back for the analyses: its spec, checkpoints and waypoints.

    The task, its data and the pretrained model come from the :class:`RunContext` of the
    directory's spec, built on first use (reading the directory alone loads nothing).
    """

    def __init__(self, validated: ValidatedSpec, directory: Path, device: torch.device) -> None:
        self.validated = validated
        #: the directory holding the spec (the run's output directory)
        self.directory = directory
        self.device = device

    @classmethod
    def open(cls, path: Path, device: torch.device, spec: Path | None = None) -> RunDirectory:
        """The run that ``path`` belongs to; ``spec`` overrides the search for ``spec.toml``."""
        spec_path = spec or find_spec(path)
        return cls(load_spec(spec_path), spec_path.parent, device)

    @property
    def name(self) -> str:
        return self.validated.spec.experiment.name

    @cached_property
    def context(self) -> RunContext:
        """The run's task, data and pretrained teacher, prepared as the pipeline prepared them."""
        return RunContext.from_spec(self.validated)

    @cached_property
    def source_model(self) -> CaldModel:
        """The pretrained teacher with the task's head, on the device: where every run of this
        spec starts."""
        return self.context.source_model.to(self.device).eval()

    def samples(self, count: int, seed: int, batch_size: int) -> list[Batch]:
        """``count`` rows drawn with ``seed`` from the evaluation split (else training), batched."""
        return sample_inputs(self.context.data, count, seed, batch_size)

    def training_batch(self, size: int) -> dict[str, Any]:
        """The first ``size`` training rows as one collated batch (inputs and labels)."""
        data = self.context.data
        return data.collate([data.train[index] for index in range(min(size, len(data.train)))])

    # ----------------------------------------------------------------- snapshots

    def _teacher_from(self, path: Path) -> CaldModel:
        return _load_weights(copy.deepcopy(self.source_model), read_tensors(path, self.device), path)

    def _student_from(self, path: Path) -> CaldModel:
        student, _ = build_student(self.context, self.source_model)
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
            return [Path(resolve_assets(self.validated, spec.teacher.waypoints))]
        results = self.directory / RESULTS_FILE
        if results.is_file():
            try:
                teacher = json.loads(results.read_text())["paths"]["teacher"]
            except (ValueError, KeyError, TypeError) as error:
                raise CaldError(f"{results} is unreadable: {error!r}") from error
            if (Path(teacher).parent / WAYPOINT_MANIFEST).is_file():
                return [Path(teacher).parent]
        return sorted(manifest.parent for manifest in self.directory.rglob(WAYPOINT_MANIFEST))


def checkpoint_dir(path: Path) -> Path:
    """``path`` itself if it holds checkpoints, else the ``checkpoints/`` of the run at ``path``."""
    return path if list_checkpoints(path) else path / CHECKPOINTS_DIR


def snapshots_at(run: RunDirectory, path: Path) -> list[Snapshot]:
    """Every snapshot found at ``path``.

    A waypoint directory (with ``waypoints.json``) gives the teacher's waypoints; a checkpoint
    directory (with ``step-*`` entries) the student's checkpoints; a run directory both: its
    ``checkpoints/`` and its teacher's waypoints (:meth:`RunDirectory.teacher_waypoint_dirs`).
    """
    if (path / WAYPOINT_MANIFEST).is_file():
        return run.waypoints(path)
    if list_checkpoints(path):
        return run.checkpoints(path)
    found = run.checkpoints(checkpoint_dir(path))
    for directory in run.teacher_waypoint_dirs():
        found += run.waypoints(directory)
    if not found:
        raise CaldError(
            f"{path} holds no checkpoints (step-* directories) and no {WAYPOINT_MANIFEST} of waypoints"
        )
    return found
