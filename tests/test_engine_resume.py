"""An interrupted and resumed run ends bitwise where an uninterrupted one does, in every teacher mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.contracts import AvailableTeachers, LossWeights
from cald_framework.engine import GuidanceSetup, LossConfig, StepEnd, train
from cald_framework.engine.checkpoints import list_checkpoints
from cald_guidance.plugin import MODES
from cald_framework.testing.engine import (
    TinyModel,
    TinyTask,
    WaypointLoader,
    all_layers,
    evaluation,
    make_waypoints,
    tiny_data,
    training,
)

BY_NAME = {mode.name: mode for mode in MODES}
STEPS = 7


class Crash(Exception):
    """Stands for the process dying after an update, before that step's checkpoint."""


def _crash_at(step: int) -> Any:
    def hook(end: StepEnd) -> None:
        if end.step == step:
            raise Crash

    return hook


def _teachers(mode: str, waypoint_dir: Path) -> AvailableTeachers:
    if mode == "waypoint":
        waypoints = make_waypoints(waypoint_dir, (2, 4, 6))
        return AvailableTeachers(waypoints=waypoints, load_teacher=WaypointLoader([]), train_mode=True)
    return AvailableTeachers(
        source=lambda: TinyModel(seed=7), target=lambda: TinyModel(seed=5), train_mode=True
    )


def _run(mode: str, out: Path, *, resume: bool = False, crash_at: int | None = None) -> TinyModel:
    """Three epochs of 3 steps (2 micro-batches each), cut at 7 steps; dropout on everywhere."""
    plugin = BY_NAME[mode]
    options = {"trajectory": {"T_u": 2}, "waypoint": {"T_w": 3}}.get(mode, {})
    student = TinyModel(seed=1, dropout=0.2)
    train(
        student, TinyTask(), tiny_data(), loss=LossConfig(LossWeights(1.0, 0.5, 0.3)),
        training=training(max_steps=STEPS, batch_size=4, grad_accum=2, save_every=2,
                          schedule="linear", warmup_steps=2, group_by_length=True),
        evaluation=evaluation(every=3, select_best=False), output_dir=out, seed=3,
        guidance=GuidanceSetup(plugin, plugin.options.model_validate(options), _teachers(mode, out.parent / "wp")),
        extractor=all_layers, resume=resume, on_step_end=_crash_at(crash_at) if crash_at else None,
    )
    return student


def _train_events(out: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in e.items() if k != "samples_per_s"} for e in events if e["event"] != "warning"]


def _assert_same_weights(a: TinyModel, b: TinyModel) -> None:
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


@pytest.mark.parametrize("mode", ["target", "trajectory", "waypoint"])
def test_resumed_run_is_bitwise_identical(tmp_path: Path, mode: str) -> None:
    straight = _run(mode, tmp_path / "straight")
    with pytest.raises(Crash):
        _run(mode, tmp_path / "cut", crash_at=5)  # the newest checkpoint is step 4, mid-epoch 2
    assert list_checkpoints(tmp_path / "cut" / "checkpoints")[-1].name == "step-00000004"
    resumed = _run(mode, tmp_path / "cut", resume=True)
    _assert_same_weights(straight, resumed)
    assert _train_events(tmp_path / "cut") == _train_events(tmp_path / "straight")


def test_resume_skips_a_truncated_checkpoint_and_cleans_leftovers(tmp_path: Path) -> None:
    straight = _run("target", tmp_path / "straight")
    with pytest.raises(Crash):
        _run("target", tmp_path / "cut", crash_at=7)
    checkpoints = tmp_path / "cut" / "checkpoints"
    newest = checkpoints / "step-00000006" / "model.safetensors"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:100])
    (checkpoints / ".tmp-crashed").mkdir()
    resumed = _run("target", tmp_path / "cut", resume=True)
    _assert_same_weights(straight, resumed)
    assert not (checkpoints / ".tmp-crashed").exists()
    events = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    (warning,) = [e for e in events if e["event"] == "warning"]
    assert warning["step"] == 4
    assert warning["message"] == (
        f"checkpoint {checkpoints / 'step-00000006'} is unusable: model.safetensors is truncated "
        f"(100 of {size} bytes); "
        "falling back to the previous checkpoint"
    )


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    straight = _run("target", tmp_path / "straight")
    resumed = _run("target", tmp_path / "fresh", resume=True)
    _assert_same_weights(straight, resumed)


def test_resuming_a_finished_run_trains_no_more(tmp_path: Path) -> None:
    first = _run("target", tmp_path / "done")
    events = (tmp_path / "done" / "metrics.jsonl").read_text()
    again = _run("target", tmp_path / "done", resume=True)
    _assert_same_weights(first, again)
    assert (tmp_path / "done" / "metrics.jsonl").read_text() == events
