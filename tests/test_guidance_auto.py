"""``guidance.mode = "auto"``: the mode follows the measured drift of the teacher's waypoints,
the choice is recorded (results.json, report.md, metrics.jsonl) and reused on resume."""

from __future__ import annotations

import errno
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_guidance.auto import choose_mode
from cald_guidance.plugin import MODES
from cald_testing.workspaces import build_review_workspace

from cald_framework import cli
from cald_framework.analysis.drift import drift
from cald_framework.analysis.hidden import sample_inputs
from cald_framework.analysis.snapshots import Snapshot
from cald_framework.contracts import TeacherDrift
from cald_framework.engine import tensorfiles
from cald_framework.run import choose
from cald_framework.run.choose import teacher_drift
from cald_framework.testing.engine import TinyModel, tiny_data

AUTO = {mode.name: mode for mode in MODES}["auto"]


def _options(**values: Any) -> Any:
    return AUTO.options.model_validate(values)


def _drift(*means: float) -> TeacherDrift:
    steps = tuple(range(2, 2 * len(means) + 1, 2))
    return TeacherDrift(steps, tuple((0.0, mean, mean) for mean in means), means)


def test_small_final_drift_chooses_waypoint_with_its_t_w() -> None:
    choice = choose_mode(_options(drift_threshold=0.2, T_w=3), _drift(0.5, 0.2))
    assert (choice.mode, choice.options) == ("waypoint", {"T_w": 3})
    assert choice.details == {"drift": 0.2, "drift_threshold": 0.2, "at_step": 4}
    assert "mean hidden-state drift 0.2000 at the teacher's step 4 is at most drift_threshold 0.2" in choice.reason


def test_large_final_drift_chooses_hybrid_switched_at_the_plateau() -> None:
    choice = choose_mode(_options(plateau_window=7), _drift(0.1, 0.21))
    assert choice.mode == "hybrid"
    assert choice.options == {"T_h": "plateau", "plateau_window": 7, "plateau_min_improvement": 0.01}
    assert "is above drift_threshold 0.2" in choice.reason
    # the options it hands on are valid hybrid options
    {mode.name: mode for mode in MODES}["hybrid"].options.model_validate(choice.options)


@pytest.mark.parametrize("seed, mode", [(0, "waypoint"), (99, "hybrid")])
def test_measured_drift_of_constructed_waypoints_forces_the_choice(seed: int, mode: str) -> None:
    """Waypoints equal to the pretrained model drift 0; an unrelated model's drift is large."""
    data = tiny_data()
    reference = TinyModel(seed=0)
    snapshots = [Snapshot("teacher", 4, lambda: TinyModel(seed=seed))]
    rows = drift(reference, snapshots, sample_inputs(data, 8, 0, 4))
    measured = teacher_drift(rows)
    assert measured.steps == (4,) and len(measured.layers[0]) == 3  # embeddings and 2 layers
    assert (measured.means[0] == 0.0) == (seed == 0)
    assert choose_mode(_options(drift_threshold=0.05), measured).mode == mode


# ------------------------------------------------------------------ whole runs

CACHE = "../teacher-cache"
#: 12 teacher steps (3 waypoints), 12 student steps with a checkpoint after each
RUN = {
    "experiment.teacher_cache": CACHE,
    "teacher.num_waypoints": 3,
    "guidance.mode": "auto",
    "training.keep_last": 2,
}
#: a threshold no drift stays under, and a switch as soon as two one-step windows are in
HYBRID = {**RUN, "guidance.drift_threshold": 1e-9, "guidance.plateau_window": 1,
          "guidance.plateau_min_improvement": 0.99}
STUDENT = Path("run") / "student" / "model.safetensors"


def _run(workspace: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(workspace)
    return cli.main(["run", "spec.toml", *extra])


def _read(workspace: Path, name: str) -> Any:
    text = (workspace / "run" / name).read_text()
    return [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else json.loads(text)


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted ``auto`` run that chooses hybrid (it also fills the teacher cache)."""
    workspace = tmp_path_factory.mktemp("auto") / "straight"
    build_review_workspace(workspace, HYBRID)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _run(workspace, monkeypatch) == 0
    return workspace


def test_auto_records_its_choice_and_the_switch(hybrid_run: Path) -> None:
    results = _read(hybrid_run, "results.json")
    choice = results["guidance_choice"]
    assert (results["mode"], results["student_init"]) == ("hybrid", "target")
    assert (choice["chooser"], choice["mode"]) == ("auto", "hybrid")
    assert choice["details"]["drift_threshold"] == 1e-9
    assert [row["step"] for row in choice["drift"]] == [4, 8, 12]
    assert choice["details"]["drift"] == choice["drift"][-1]["mean"] > 0
    assert results["guidance_summary"]["switch_step"] == 2
    assert choice == _read(hybrid_run, "guidance_choice.json")

    events = _read(hybrid_run, "metrics.jsonl")
    (recorded,) = [event for event in events if event["event"] == "guidance_choice"]
    assert recorded["step"] == 0 and recorded["mode"] == "hybrid" and recorded["reason"] == choice["reason"]
    (switch,) = [event for event in events if event["event"] == "guidance"]
    assert switch["switch_step"] == 2

    report = (hybrid_run / "run" / "report.md").read_text()
    assert f"`auto` chose `hybrid`: {choice['reason']}." in report
    assert f"| 12 | {choice['drift'][-1]['mean']:.4f} |" in report
    assert f"Switch: {results['guidance_summary']['reason']}." in report


def test_the_drift_is_what_analyze_drift_reports(hybrid_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    choice = _read(hybrid_run, "guidance_choice.json")
    (waypoints,) = {path.parent for path in (hybrid_run.parent / "teacher-cache").rglob("waypoints.json")}
    monkeypatch.chdir(hybrid_run)
    assert cli.main(["analyze", "drift", str(waypoints), "--spec", "run/spec.toml", "--out", "out"]) == 0
    lines = (hybrid_run / "out" / "drift.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    # the CSV keeps 6 significant digits
    assert [float(row["mean"]) for row in rows] == pytest.approx([row["mean"] for row in choice["drift"]], abs=1e-7)


def test_auto_chooses_waypoint_when_the_drift_is_small(hybrid_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = hybrid_run.parent / "waypoint"
    build_review_workspace(workspace, {**RUN, "guidance.drift_threshold": 2.0, "training.epochs": 1})
    assert _run(workspace, monkeypatch) == 0
    results = _read(workspace, "results.json")
    assert (results["mode"], results["student_init"], results["guidance_choice"]["mode"]) == (
        "waypoint", "source", "waypoint",
    )
    assert results["guidance_summary"] == {}
    assert "is at most drift_threshold 2" in results["guidance_choice"]["reason"]


def _disk_full_at(call: int) -> Any:
    """A safetensors writer that fails, as on a full disk, at its ``call``-th file."""
    real, calls = tensorfiles.save_file, itertools.count(1)

    def save(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        if next(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)

    return save


@pytest.mark.parametrize("checkpoint", [2, 5])
def test_resumed_auto_run_reuses_its_choice_and_ends_bitwise(
    hybrid_run: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: int
) -> None:
    """Cut while writing checkpoint 2 (before the switch at step 2 is saved) or 5 (after)."""
    workspace = hybrid_run.parent / f"cut-{checkpoint}"
    build_review_workspace(workspace, HYBRID)
    with monkeypatch.context() as patch:  # the teacher is cached: every file is a checkpoint's (2 each)
        patch.setattr(tensorfiles, "save_file", _disk_full_at(2 * checkpoint - 1))
        assert _run(workspace, monkeypatch) == cli.USER_ERROR

    def measured_again(*args: Any) -> None:
        raise AssertionError("a resumed run measured the drift again")

    monkeypatch.setattr(choose, "measure_drift", measured_again)
    assert _run(workspace, monkeypatch, "--resume") == 0
    straight = tensorfiles.read_tensors(hybrid_run / STUDENT)
    resumed = tensorfiles.read_tensors(workspace / STUDENT)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    kinds = [event["event"] for event in _read(workspace, "metrics.jsonl") if event["event"].startswith("guidance")]
    assert kinds == ["guidance_choice", "guidance"]
