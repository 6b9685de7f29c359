"""Registers the five guidance modes of the paper and ``auto``, which picks one of them from the
teacher's drift, exactly as a third-party package would."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import GuidanceContext, GuidancePlugin, NoOptions, TaskOnly

from .auto import AutoOptions, choose_mode, never_built
from .frozen import HybridOptions, HybridSchedule, TargetSchedule
from .trajectory import TrajectoryOptions, TrajectorySchedule
from .waypoint import WaypointOptions, WaypointSchedule


def _unguided(options: NoOptions, context: GuidanceContext) -> TaskOnly:
    return TaskOnly(context)


#: the built-in modes, in the order of the paper's table, then ``auto``
MODES = (
    GuidancePlugin(
        "unguided", NoOptions, _unguided, default_init="target",
        description="task loss only; no teacher is ever built or run",
    ),
    GuidancePlugin(
        "target", NoOptions, TargetSchedule, needs_target_teacher=True, default_init="target",
        description="distil from the frozen fine-tuned teacher at every step",
    ),
    GuidancePlugin(
        "trajectory", TrajectoryOptions, TrajectorySchedule, default_init="source",
        description="distil from a copy of the source fine-tuned alongside, updated every T_u steps",
    ),
    GuidancePlugin(
        "waypoint", WaypointOptions, WaypointSchedule, needs_waypoints=True, default_init="source",
        description="distil from the teacher's fine-tuning checkpoints, the next one ahead every T_w steps",
    ),
    GuidancePlugin(
        "hybrid", HybridOptions, HybridSchedule, needs_target_teacher=True, default_init="target",
        description="target guidance until step T_h (a fraction of the run, or the layer loss's plateau), then unguided",
    ),
    GuidancePlugin(
        "auto", AutoOptions, never_built, needs_target_teacher=True, needs_waypoints=True,
        description="waypoint when the teacher's hidden states drift little in fine-tuning, "
        "else hybrid switched at the layer loss's plateau",
        choose=choose_mode,
    ),
)


@hookimpl
def cald_register_guidance(register: Callable[[GuidancePlugin], None]) -> None:
    for mode in MODES:
        register(mode)
