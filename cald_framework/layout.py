"""The names of the files and folders of a run directory, and nothing else.

One place for every name, so that the pipeline that writes a run, the engine that checkpoints
it, the analyses that read it back and the scripts around it can never disagree. This module
imports nothing from the engine, so any of them may use it.

A run directory (``experiment.output_dir``)::

    spec.toml               the resolved spec the run was started with
    results.json            the run's summary (teacher vs student, paths, versions)
    report.md               the same, for people
    metrics.jsonl           one JSON event per line (train, eval, nonfinite, warning)
    transfer_report.json    what conversion transferred, replaced and created
    eval.json, eval.md      ``cald eval``'s lm-evaluation-harness results, teacher vs student
    guidance_choice.json    the mode ``guidance.mode = "auto"`` chose, and why (reused on resume)
    student/                the exported student (``save_pretrained``)
    checkpoints/step-XXXXXXXX/   training checkpoints
    alignment/step-XXXXXXXX/     checkpoints of the alignment before training (the mixers)
    trackers/               tensorboard / wandb logs
    teacher-cache/<key>/    fine-tuned teachers (unless ``experiment.teacher_cache`` moves it)
        DONE.json           written when the fine-tuning run is complete
        target/             the fine-tuned teacher
        waypoints/step-XXXXXXXX.safetensors, waypoints.json
"""

from __future__ import annotations

import re

SPEC_FILE = "spec.toml"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
METRICS_FILE = "metrics.jsonl"
TRANSFER_REPORT_FILE = "transfer_report.json"
#: ``cald eval``'s results; the table beside it is ``eval.md``
EVAL_FILE = "eval.json"
GUIDANCE_CHOICE_FILE = "guidance_choice.json"
STUDENT_DIR = "student"
CHECKPOINTS_DIR = "checkpoints"
ALIGNMENT_DIR = "alignment"
TRACKERS_DIR = "trackers"

TEACHER_CACHE_DIR = "teacher-cache"
#: marks a complete entry of the teacher cache
DONE_FILE = "DONE.json"
TARGET_DIR = "target"
WAYPOINTS_DIR = "waypoints"
#: the manifest listing a fine-tuning run's waypoints by step
WAYPOINT_MANIFEST = "waypoints.json"
WAYPOINT_SUFFIX = ".safetensors"

_STEP_PREFIX = "step-"
_STEP_NAME = re.compile(rf"^{_STEP_PREFIX}(\d{{8,}})$")


def step_name(step: int) -> str:
    """``step-XXXXXXXX``: the name of a checkpoint directory, or the stem of a waypoint file."""
    return f"{_STEP_PREFIX}{step:08d}"


def waypoint_file(step: int) -> str:
    """``step-XXXXXXXX.safetensors``: the file of the waypoint saved at ``step``."""
    return step_name(step) + WAYPOINT_SUFFIX


def parse_step(name: str) -> int | None:
    """The step of a ``step-XXXXXXXX`` name, or ``None`` for any other name."""
    match = _STEP_NAME.match(name)
    return int(match.group(1)) if match else None
