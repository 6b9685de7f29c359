"""The ``waypoint`` mode: the teacher is a saved state of its own fine-tuning run (Algorithm 3).

At step ``i`` the teacher is the first waypoint whose step is greater than ``i`` (the last one
once every waypoint is behind), chosen again every ``T_w`` steps. Waypoints are loaded when
first needed and one at a time: the previous one is released before the next is built.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cald_framework.contracts import FrozenTeacherSchedule, GuidanceContext, PluginOptions, StepPlan


class WaypointOptions(PluginOptions):
    #: steps between choices of the waypoint (default: total steps // number of waypoints)
    T_w: int | None = Field(default=None, gt=0)


class WaypointSchedule(FrozenTeacherSchedule):
    def __init__(self, options: WaypointOptions, context: GuidanceContext):
        super().__init__(context)
        self.waypoints = sorted(context.require("waypoints"), key=lambda w: w.step)
        self.load = context.require("load_teacher")
        self.interval = options.T_w or max(1, context.total_steps // len(self.waypoints))
        self.weights = context.weights
        #: index of the waypoint in :attr:`teacher`, or of the one to load after a resume
        self.index: int | None = None

    def pick(self, step: int) -> int:
        """Index of the first waypoint ahead of ``step``, or of the last one."""
        ahead = (i for i, waypoint in enumerate(self.waypoints) if waypoint.step > step)
        return next(ahead, len(self.waypoints) - 1)

    def plan(self, step: int) -> StepPlan:
        if not self.weights.needs_teacher:
            return StepPlan(self.weights, uses_teacher=False)
        wanted = self.pick(step - step % self.interval)
        if wanted != self.index or self.teacher is None:
            self.teacher = None
            self.teacher = self.context.prepare_teacher(self.load(self.waypoints[wanted].path))
            self.index = wanted
        return StepPlan(self.weights, uses_teacher=True)

    def state_dict(self) -> dict[str, Any]:
        return {"waypoint": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = state["waypoint"]
        self.teacher = None
