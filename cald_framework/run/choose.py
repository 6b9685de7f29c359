"""The choose stage: a choosing guidance mode (``auto``) becomes the mode the teacher's drift
calls for, before the student is converted (the chosen mode decides the student's init).

The drift is what ``cald analyze drift`` measures (:func:`~cald_framework.analysis.drift.drift`):
the cosine distance between the pretrained model's hidden states and each waypoint's, on
held-out samples. The choice is written to ``guidance_choice.json``, and a resumed run reads it
back rather than measuring again, so that it trains under the mode it started with; it is
also a ``guidance_choice`` event of ``metrics.jsonl`` and a section of the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..analysis.cli import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLE_SEED, DEFAULT_SAMPLES
from ..analysis.drift import drift
from ..analysis.hidden import sample_inputs
from ..analysis.snapshots import Snapshot
from ..atomic import write_json_atomic
from ..contracts import GuidancePlugin, ModeChoice, TeacherDrift
from ..engine.logbook import append_event
from ..layout import GUIDANCE_CHOICE_FILE, METRICS_FILE
from ..plugin_manager import load_registries
from ..spec import ValidatedSpec
from ..validation import validate_options
from .prepare import RunContext, processes
from .teachers import RunTeachers, teacher_providers

#: the ``metrics.jsonl`` event that records the choice
CHOICE_EVENT = "guidance_choice"


@dataclass(frozen=True)
class GuidanceChoice:
    """What a choosing mode decided and what it measured: ``guidance_choice.json``."""

    #: the choosing mode (``auto``)
    chooser: str
    #: the mode the run trains with, and its options
    mode: str
    options: dict[str, Any]
    reason: str
    details: dict[str, Any]
    #: the ``cald analyze drift`` rows: per waypoint, its step, ``mean`` and ``layer_i``
    drift: list[dict[str, Any]]


def measure_drift(context: RunContext, teachers: RunTeachers) -> list[dict[str, Any]]:
    """The drift rows of the run's waypoints from the pretrained model, on the samples that
    ``cald analyze drift`` takes by default: its numbers for the teacher's waypoint directory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load = teacher_providers(context, teachers).load_teacher
    assert load is not None
    snapshots = [
        Snapshot("teacher", waypoint.step, lambda path=waypoint.path: load(path))
        for waypoint in teachers.waypoints
    ]
    batches = sample_inputs(context.data, DEFAULT_SAMPLES, DEFAULT_SAMPLE_SEED, DEFAULT_BATCH_SIZE)
    return drift(context.source_copy().to(device), snapshots, batches)


def teacher_drift(rows: list[dict[str, Any]]) -> TeacherDrift:
    """The drift rows as the guidance contract hands them to a choosing mode."""
    layers = sum(1 for key in rows[0] if key.startswith("layer_"))
    return TeacherDrift(
        steps=tuple(row["step"] for row in rows),
        layers=tuple(tuple(row[f"layer_{i}"] for i in range(layers)) for row in rows),
        means=tuple(row["mean"] for row in rows),
    )


def _decide(context: RunContext, teachers: RunTeachers, chooser: GuidancePlugin) -> GuidanceChoice:
    rows = measure_drift(context, teachers)
    assert chooser.choose is not None
    made: ModeChoice = chooser.choose(context.validated.guidance_options, teacher_drift(rows))
    return GuidanceChoice(chooser.name, made.mode, dict(made.options), made.reason, dict(made.details), rows)


def chosen_spec(validated: ValidatedSpec, choice: GuidanceChoice) -> ValidatedSpec:
    """``validated`` with the chosen mode and its options in place of the choosing mode."""
    plugin = load_registries().guidance.get(choice.mode)
    options = validate_options(plugin.options, choice.options, f"mode {plugin.name!r} chosen by {choice.chooser!r}")
    return replace(validated, guidance=plugin, guidance_options=options)


def choose_guidance(context: RunContext, teachers: RunTeachers, *, resume: bool) -> GuidanceChoice | None:
    """Resolve a choosing mode in ``context`` (its spec then names the chosen mode); ``None``
    when the spec's mode chooses nothing.

    A resumed run reuses the recorded choice; otherwise the drift is measured and the choice
    recorded (by the main process).
    """
    chooser = context.validated.guidance
    if chooser.choose is None:
        return None
    path = context.output_dir / GUIDANCE_CHOICE_FILE
    if resume and path.is_file():
        choice = GuidanceChoice(**json.loads(path.read_text()))
    else:
        choice = _decide(context, teachers, chooser)
        if processes().is_main_process:
            write_json_atomic(path, asdict(choice), indent=2)
    context.validated = chosen_spec(context.validated, choice)
    return choice


def log_choice(context: RunContext, choice: GuidanceChoice) -> None:
    """The choice as a ``guidance_choice`` event of ``metrics.jsonl``, unless already there (a
    resumed run keeps the one of its start). Call it after the alignment stage, which clears the
    file of a run started afresh."""
    path = context.output_dir / METRICS_FILE
    if not processes().is_main_process:
        return
    if path.is_file() and any(json.loads(line)["event"] == CHOICE_EVENT for line in path.read_text().splitlines() if line):
        return
    append_event(path, CHOICE_EVENT, 0, asdict(choice))
