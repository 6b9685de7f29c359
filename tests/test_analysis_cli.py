"""The analysis commands on a run directory laid out as the pipeline and the engine write it."""

from __future__ import annotations

import argparse
import copy
import csv
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import write_review_files

from cald_framework.analysis.cli import add_analysis_commands
from cald_framework.analysis.runs import RunDirectory
from cald_framework.contracts import Waypoint
from cald_framework.conversion import convert
from cald_framework.engine.checkpoints import save_checkpoint
from cald_framework.engine.tensorfiles import write_tensors
from cald_framework.engine.waypoints import write_manifest
from cald_framework.errors import CaldError, CheckpointError
from cald_framework.plugin_manager import load_registries

SPEC = """\
[experiment]
name = "tiny"
output_dir = "runs/{name}"
seed = 3

[teacher]
source = "bert"
model = "./tiny-bert"

[student]
mixer = "linformer"

[student.mixer_options]
k = 4

[task]
kind = "text-classification"
dataset = "csv"
data_files = "./reviews.csv"
eval_from_train = 0.25
max_length = 16

[guidance]
mode = "waypoint"
"""

PNG = b"\x89PNG\r\n\x1a\n"


def main(argv: Sequence[str]) -> int:
    """The analysis commands as ``python -m cald_framework`` parses and dispatches them."""
    parser = argparse.ArgumentParser()
    add_analysis_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def _shifted(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in changed.backbone.encoder.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return changed


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT, a CSV task, and run ``runs/tiny`` with two student checkpoints (steps 2, 4)
    and a teacher cache with two waypoints: step 3 holds the pretrained weights themselves."""
    root = tmp_path_factory.mktemp("analysis")
    write_review_files(root)
    run_dir = root / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.toml").write_text(SPEC)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        source = RunDirectory.open(run_dir, torch.device("cpu")).source_model
    student, _ = convert(source, load_registries().mixers.get("linformer"), {"k": 4}, 16)
    for step in (2, 4):
        state = _shifted(student, step).state_dict()
        save_checkpoint(run_dir / "checkpoints", step, {"model": state}, {"step": step})
    cache = run_dir / "teacher-cache" / "0123abcd"
    waypoints = []
    for step, model in ((3, source), (6, _shifted(source, 6))):
        path = cache / "waypoints" / f"step-{step:08d}.safetensors"
        write_tensors(path, model.state_dict())
        waypoints.append(Waypoint(step, path))
    write_manifest(cache, 6, waypoints)
    student.save_pretrained(run_dir / "student")
    return root


@pytest.fixture
def inside(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the work directory: the spec's paths are relative to it, as during the run."""
    monkeypatch.chdir(workdir)
    return workdir


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_drift_of_a_run_covers_its_checkpoints_and_its_teachers_waypoints(inside, capsys):
    assert main(["analyze", "drift", "runs/tiny", "--samples", "6", "--batch-size", "4",
                 "--out", "out"]) == 0
    rows = _read(inside / "out" / "drift.csv")
    assert list(rows[0]) == ["run", "step", "mean", "layer_0", "layer_1", "layer_2"]
    assert [(row["run"], row["step"]) for row in rows] == [
        ("tiny", "2"), ("tiny", "4"), ("tiny/teacher", "3"), ("tiny/teacher", "6")
    ]
    by_step = {row["step"]: row for row in rows}
    # the step-3 waypoint holds the pretrained weights: read back from disk, no drift at all
    assert [by_step["3"][key] for key in ("mean", "layer_0", "layer_1", "layer_2")] == ["0"] * 4
    assert all(float(by_step[step]["layer_2"]) > 0 for step in ("2", "4", "6"))
    assert (inside / "out" / "drift.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == list(rows[0])
    assert "wrote out/drift.csv and out/drift.png" in printed


def test_drift_of_a_waypoint_directory_alone(inside):
    assert main(["analyze", "drift", "runs/tiny/teacher-cache/0123abcd", "--samples", "4",
                 "--out", "out-waypoints"]) == 0
    rows = _read(inside / "out-waypoints" / "drift.csv")
    assert [(row["run"], row["step"]) for row in rows] == [("tiny/teacher", "3"), ("tiny/teacher", "6")]


def test_trajectory_has_the_pretrained_model_every_checkpoint_and_waypoint(inside):
    assert main(["analyze", "trajectory", "runs/tiny", "--samples", "6", "--out", "out"]) == 0
    rows = _read(inside / "out" / "trajectory.csv")
    assert list(rows[0]) == ["run", "step", "x", "y"]
    assert [(row["run"], row["step"]) for row in rows] == [
        ("pretrained", "0"), ("tiny", "2"), ("tiny", "4"), ("tiny/teacher", "3"), ("tiny/teacher", "6")
    ]
    assert (inside / "out" / "trajectory.png").read_bytes()[:8] == PNG


def test_bench_of_a_spec_and_a_saved_student(inside, capsys):
    assert main(["bench", "runs/tiny/spec.toml", "runs/tiny/student", "--lengths", "8,40",
                 "--repeats", "1", "--overhead-steps", "1", "--update-every", "1",
                 "--out", "bench"]) == 0
    table = _read(inside / "bench" / "bench.csv")
    assert list(table[0]) == ["scenario", "length", "teacher_ms", "student_ms", "speedup",
                              "teacher_peak_mb", "student_peak_mb", "note"]
    assert [(row["scenario"], row["length"]) for row in table] == [
        ("tiny", "8"), ("tiny", "40"), ("tiny/student", "8"), ("tiny/student", "40")
    ]
    # the spec's student is converted for the longest length; the saved one is sized for 16
    assert table[1]["note"] == ""
    assert table[3]["note"] == "student: linformer: sequence of length 40 is longer than max_length 16"
    summary = _read(inside / "bench" / "bench_summary.csv")
    assert [row["scenario"] for row in summary] == ["tiny", "tiny/student"]
    assert list(summary[0]) == ["scenario", "student_wins_from", "longest", "speedup_at_longest",
                                "teacher_growth", "student_growth"]
    overhead = _read(inside / "bench" / "bench_overhead.csv")
    assert [row["mode"] for row in overhead] == [
        "unguided", "target / waypoint / hybrid", "trajectory (T_u=1)"
    ]
    assert (inside / "bench" / "bench.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert "note: the teacher's position table was extended to 40 positions" in printed
    assert "note: the student's position table was extended to 40 positions" in printed


def test_user_errors_name_what_is_wrong(inside, tmp_path):
    with pytest.raises(CaldError, match="^no spec.toml in .* or any directory above it; pass "
                       "the spec with --spec$"):
        main(["analyze", "drift", str(tmp_path)])
    (tmp_path / "spec.toml").write_text(SPEC)
    with pytest.raises(CaldError, match="holds no checkpoints .step-\\* directories. and no "
                       "waypoints.json of waypoints$"):
        main(["analyze", "drift", str(tmp_path)])
    with pytest.raises(CaldError, match="--lengths must be comma-separated numbers, got '8,x'"):
        main(["bench", "runs/tiny/spec.toml", "--lengths", "8,x"])
    with pytest.raises(CaldError, match="^nowhere: no such spec file or model directory$"):
        main(["bench", "nowhere"])


def test_a_checkpoint_that_does_not_fit_the_spec_is_named(inside, tmp_path):
    save_checkpoint(tmp_path / "checkpoints", 1, {"model": {"w": torch.zeros(1)}}, {})
    with pytest.raises(CheckpointError, match="step-00000001 does not fit the model its run's "
                       "spec builds: Missing key"):
        main(["analyze", "drift", str(tmp_path / "checkpoints"), "--spec", "runs/tiny/spec.toml",
              "--samples", "2"])
