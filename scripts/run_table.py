"""What the results tables share: a row is one ``cald run`` of a spec with ``--set`` overrides.

Each row's command is printed and run as printed; a row whose ``results.json`` already exists is
read instead of run again (delete its run directory to redo it).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cald_framework.layout import RESULTS_FILE


@dataclass(frozen=True)
class Row:
    label: str
    #: the run's ``experiment.name``, also its directory under ``runs/``
    name: str
    overrides: tuple[str, ...] = ()


def command(spec: str, row: Row) -> list[str]:
    """The exact ``python -m cald_framework run`` command of ``row``."""
    sets = [f"experiment.name={row.name}", *row.overrides]
    args = ["python", "-m", "cald_framework", "run", spec]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def run_row(spec: str, row: Row) -> dict:
    """The row's ``results.json``, after running its command if the run has none yet."""
    results_path = Path("runs") / row.name / RESULTS_FILE
    if not results_path.exists():
        args = command(spec, row)
        print("$", shlex.join(args), flush=True)
        subprocess.run([sys.executable, *args[1:]], check=True)
    return json.loads(results_path.read_text())


def final_metric(metrics_path: Path, metric: str) -> float:
    """The metric at the last evaluation (``results.json`` holds the best checkpoint's)."""
    lines = metrics_path.read_text().splitlines()
    evaluations = [event for event in map(json.loads, lines) if event["event"] == "eval"]
    return evaluations[-1]["metrics"][metric]
