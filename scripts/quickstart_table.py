"""The README's results table: every guidance mode of the quickstart spec under the paper's
conversion (random mixer weights), one run after another.

Each row is one ``python -m cald_framework run specs/quickstart.toml --set ...`` command, run as
it is printed; the table is built from the runs' ``results.json``. The teacher row comes from the
fine-tuning run that the first command produces (and the others reuse from the teacher cache).
Rows whose ``results.json`` already exists are not run again (delete ``runs/quickstart*`` to
start afresh). Wall times are of the training loops, evaluation included.

    python -m scripts.quickstart_table [--spec specs/quickstart.toml] [--out runs/quickstart-table.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from cald_framework.layout import DONE_FILE, METRICS_FILE

from scripts.run_table import Row, command, final_metric, run_row



#: the table compares guidance modes under the paper's conversion: random mixer weights
PAPER_INIT = "student.mixer_options.init=random"

ROWS = tuple(
    Row(label, name, (*overrides, PAPER_INIT))
    for label, name, overrides in (
        ("target-guided", "quickstart", ()),
        ("unguided", "quickstart-unguided", ("guidance.mode=unguided",)),
        (
            "unguided, source init (the paper's code)",
            "quickstart-unguided-source-init",
            ("guidance.mode=unguided", "student.init=source"),
        ),
        ("target-guided, source init", "quickstart-target-source-init", ("student.init=source",)),
        # the co-trained teacher takes the teacher fine-tuning's learning rate, as in the paper
        (
            "trajectory-guided",
            "quickstart-trajectory",
            ("guidance.mode=trajectory", "guidance.teacher_lr=5e-5"),
        ),
        ("waypoint-guided", "quickstart-waypoint", ("guidance.mode=waypoint",)),
        (
            "hybrid (T_h = half the run)",
            "quickstart-hybrid",
            ("guidance.mode=hybrid", "guidance.T_h=0.5"),
        ),
    )
)


def teacher_seconds(results: dict) -> float:
    """The fine-tuning time: of this run, or of the cached run it reused."""
    if results["teacher_finetune_wall_seconds"] is not None:
        return results["teacher_finetune_wall_seconds"]
    done = json.loads((Path(results["paths"]["teacher"]).parent / DONE_FILE).read_text())
    return done["wall_seconds"]


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
