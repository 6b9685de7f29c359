"""The README's results table: every guidance mode of the quickstart spec, one run after another.

Each row is one ``python -m cald_framework run specs/quickstart.toml --set ...`` command, run as
it is printed; the table is built from the runs' ``results.json``. The teacher row comes from the
fine-tuning run that the first command produces (and the others reuse from the teacher cache).
Rows whose ``results.json`` already exists are not run again (delete ``runs/quickstart*`` to
start afresh). Wall times are of the training loops, evaluation included.

    python scripts/quickstart_table.py [--spec specs/quickstart.toml] [--out runs/quickstart-table.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cald_framework.layout import DONE_FILE, METRICS_FILE, RESULTS_FILE


@dataclass(frozen=True)
class Row:
    label: str
    name: str
    overrides: tuple[str, ...]


ROWS = (
    Row("target-guided", "quickstart", ()),
    Row("unguided", "quickstart-unguided", ("guidance.mode=unguided",)),
    Row(
        "unguided, source init (the paper's code)",
        "quickstart-unguided-source-init",
        ("guidance.mode=unguided", "student.init=source"),
    ),
    Row("target-guided, source init", "quickstart-target-source-init", ("student.init=source",)),
    # the co-trained teacher takes the teacher fine-tuning's learning rate, as in the paper
    Row(
        "trajectory-guided",
        "quickstart-trajectory",
        ("guidance.mode=trajectory", "guidance.teacher_lr=5e-5"),
    ),
    Row("waypoint-guided", "quickstart-waypoint", ("guidance.mode=waypoint",)),
    Row("hybrid (T_h = half the run)", "quickstart-hybrid", ("guidance.mode=hybrid", "guidance.T_h=0.5")),
)


def command(spec: str, row: Row) -> list[str]:
    sets = [f"experiment.name={row.name}", *row.overrides] if row.name != "quickstart" else []
    args = ["python", "-m", "cald_framework", "run", spec]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def run_row(spec: str, row: Row) -> dict:
    results_path = Path("runs") / row.name / RESULTS_FILE
    if not results_path.exists():
        args = command(spec, row)
        print("$", shlex.join(args), flush=True)
        subprocess.run([sys.executable, *args[1:]], check=True)
    return json.loads(results_path.read_text())


def teacher_seconds(results: dict) -> float:
    """The fine-tuning time: of this run, or of the cached run it reused."""
    if results["teacher_finetune_wall_seconds"] is not None:
        return results["teacher_finetune_wall_seconds"]
    done = json.loads((Path(results["paths"]["teacher"]).parent / DONE_FILE).read_text())
    return done["wall_seconds"]


def final_metric(metrics_path: Path, metric: str) -> float:
    """The metric at the last evaluation (the results hold the best checkpoint's)."""
    lines = metrics_path.read_text().splitlines()
    evaluations = [event for event in map(json.loads, lines) if event["event"] == "eval"]
    return evaluations[-1]["metrics"][metric]


def render(spec: str, results: dict[Row, dict]) -> str:
    first = results[ROWS[0]]
    metric = first["primary_metric"]
    lines = [
        f"| run | {metric}: best checkpoint | at the end | training wall time | command |",
        "|---|---|---|---|---|",
        f"| teacher (MiniLM fine-tuned) | {first['teacher_metrics'][metric]:.3f} "
        f"| {final_metric(Path(first['paths']['teacher']).parent / METRICS_FILE, metric):.3f} "
        f"| {teacher_seconds(first):.0f} s | produced by the first command below |",
    ]
    for row in ROWS:
        result = results[row]
        lines.append(
            f"| {row.label} | {result['student_metrics'][metric]:.3f} "
            f"| {final_metric(Path(result['paths']['metrics']), metric):.3f} "
            f"| {result['train_wall_seconds']:.0f} s "
            f"| `{shlex.join(command(spec, row))}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/quickstart.toml")
    parser.add_argument("--out", default="runs/quickstart-table.md")
    options = parser.parse_args()
    results = {row: run_row(options.spec, row) for row in ROWS}
    table = render(options.spec, results)
    Path(options.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
