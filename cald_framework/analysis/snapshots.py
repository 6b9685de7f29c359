"""A snapshot: one saved state of a model along a run (a checkpoint or a waypoint), loaded on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Snapshot:
    """The model of run ``run`` after ``step`` optimizer steps; ``load`` builds it when asked.

    Loading lazily keeps one snapshot in memory at a time, however long the run.
    """

    run: str
    step: int
    load: Callable[[], nn.Module]

    @property
    def label(self) -> str:
        return f"{self.run} step {self.step}"
