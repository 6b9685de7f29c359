"""scripts/quickstart_table.py: the README's results table from the runs' results.json."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.quickstart_table import ROWS, best_rows, command, render, reseeded


def _run_dir(root: Path, name: str, best: float, accuracies: list[float], teacher: float = 0.81) -> dict:
    run = root / name
    run.mkdir(parents=True)
    events = [{"event": "eval", "step": 50 * (i + 1), "metrics": {"accuracy": a}} for i, a in enumerate(accuracies)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return {
        "primary_metric": "accuracy",
        "teacher_metrics": {"accuracy": teacher},
        "student_metrics": {"accuracy": best},
        "train_wall_seconds": 300.4,
        "teacher_finetune_wall_seconds": None,  # the teacher came from the cache
        "paths": {"metrics": str(run / "metrics.jsonl"), "teacher": str(root / "teacher" / "target")},
    }


def _cached_teacher(root: Path) -> None:
    teacher = root / "teacher"
    teacher.mkdir()
    (teacher / "DONE.json").write_text(json.dumps({"wall_seconds": 133.8}))
    (teacher / "metrics.jsonl").write_text(json.dumps({"event": "eval", "step": 9, "metrics": {"accuracy": 0.8}}) + "\n")


def test_every_row_has_its_command_and_the_cached_teacher_time(tmp_path: Path) -> None:
    _cached_teacher(tmp_path)
    results = {row: _run_dir(tmp_path, row.name, 0.7, [0.6, 0.65]) for row in ROWS}
    lines = render("specs/quickstart.toml", results, {}).splitlines()
    assert lines[2] == "| teacher (MiniLM fine-tuned) | 0.810 | 0.800 | 134 s | produced by the first command below |"
    assert lines[3] == (
        "| target-guided | 0.700 | 0.650 | 300 s | `python -m cald_framework run specs/quickstart.toml "
        "--set experiment.name=quickstart` |"
    )
    assert len(lines) == 3 + len(ROWS)
    assert all(f"experiment.name={row.name}" in line for row, line in zip(ROWS, lines[3:]))


def test_the_two_best_rows_repeat_under_the_second_seed_with_their_own_teacher(tmp_path: Path) -> None:
    _cached_teacher(tmp_path)
    scores = dict(zip(ROWS, (0.80, 0.70, 0.69, 0.78, 0.79, 0.82, 0.75, 0.81)))
    results = {row: _run_dir(tmp_path, row.name, scores[row], [0.6]) for row in ROWS}
    top = best_rows(results, 2)
    assert [row.name for row in top] == ["quickstart-waypoint", "quickstart-auto"]
    repeated = {reseeded(row): _run_dir(tmp_path, reseeded(row).name, 0.8, [0.79], teacher=0.83) for row in top}
    lines = render("s.toml", results, repeated).splitlines()
    assert lines[-3] == "| teacher, seed 1 | 0.830 | 0.800 | 134 s | produced by the first command below |"
    assert lines[-2] == (
        "| waypoint-guided, seed 1 | 0.800 | 0.790 | 300 s | `python -m cald_framework run s.toml "
        "--set experiment.name=quickstart-waypoint-seed1 --set guidance.mode=waypoint --set experiment.seed=1` |"
    )


def test_commands_name_each_run_and_its_overrides() -> None:
    hybrid = next(row for row in ROWS if row.name == "quickstart-hybrid")
    assert command("s.toml", hybrid) == [
        "python", "-m", "cald_framework", "run", "s.toml",
        "--set", "experiment.name=quickstart-hybrid",
        "--set", "guidance.mode=hybrid", "--set", "guidance.T_h=0.5",
    ]
    assert len({row.name for row in ROWS}) == len(ROWS)
