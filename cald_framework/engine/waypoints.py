"""The waypoint manifest of a teacher fine-tuning run: ``waypoints.json`` in its directory.

``{"format": 1, "total_steps": S, "waypoints": {"<step>": "<path relative to the manifest>"}}``.
With ``n`` waypoints over ``S`` steps they are saved after steps ``k * (S // n)``, ``k = 1..n``
(the paper's code switches teachers at multiples of ``S // n``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..atomic import write_json_atomic
from ..contracts import Waypoint
from ..errors import CaldError, CheckpointError
from ..layout import WAYPOINT_MANIFEST

_FORMAT = 1


def waypoint_steps(total_steps: int, count: int) -> list[int]:
    """The steps after which the ``count`` waypoints are saved."""
    interval = total_steps // count
    if interval == 0:
        raise CaldError(
            f"teacher.num_waypoints = {count} is more than the {total_steps} steps of the "
            "teacher fine-tuning run"
        )
    return [k * interval for k in range(1, count + 1)]


def write_manifest(directory: Path, total_steps: int, waypoints: list[Waypoint]) -> Path:
    """Write the manifest listing ``waypoints`` (paths inside ``directory``), atomically."""
    path = directory / WAYPOINT_MANIFEST
    entries = {str(w.step): w.path.relative_to(directory).as_posix() for w in waypoints}
    write_json_atomic(path, {"format": _FORMAT, "total_steps": total_steps, "waypoints": entries})
    return path


def _inside(relative: str) -> str:
    """``relative`` when it names a path below the manifest's directory, else a ``ValueError``."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ValueError(f"entry {relative!r} is outside the manifest's directory")
    return relative


def read_waypoints(location: Path) -> list[Waypoint]:
    """The waypoints listed by a manifest (or the directory holding one), by increasing step.

    Every entry must be a relative path that stays inside the manifest's directory, so a
    manifest cannot point a run at files elsewhere on the machine.
    """
    path = location / WAYPOINT_MANIFEST if location.is_dir() else location
    try:
        document = json.loads(path.read_text())
        if document.get("format") != _FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        waypoints = sorted(
            (Waypoint(int(step), path.parent / _inside(relative)) for step, relative in document["waypoints"].items()),
            key=lambda w: w.step,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"waypoint manifest {path} is unreadable: {error}") from error
    for waypoint in waypoints:
        if not waypoint.path.is_file():
            raise CheckpointError(f"waypoint manifest {path}: step {waypoint.step} file {waypoint.path} is missing")
    if not waypoints:
        raise CheckpointError(f"waypoint manifest {path} lists no waypoints")
    return waypoints
