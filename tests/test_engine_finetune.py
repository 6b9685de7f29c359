"""Teacher fine-tuning: the target and the waypoints along the way, and their manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cald_framework.contracts import LossWeights
from cald_framework.engine import (
    FinetuneResult,
    LossConfig,
    StepEnd,
    finetune_teacher,
    read_tensors,
    read_waypoints,
    train,
)
from cald_framework.errors import CaldError, CheckpointError
from cald_framework.testing.engine import TinyModel, TinyTask, evaluation, state_of, tiny_data, training


def _finetune(out: Path, count: int = 3, **changes: object) -> tuple[TinyModel, FinetuneResult]:
    teacher = TinyModel(seed=4)
    result = finetune_teacher(
        teacher, TinyTask(), tiny_data(), training=training(**changes),
        evaluation=evaluation(select_best=False), output_dir=out, num_waypoints=count, seed=2,
    )
    return teacher, result


def test_waypoints_hold_the_weights_after_their_steps(tmp_path: Path) -> None:
    teacher, result = _finetune(tmp_path / "finetune", max_steps=7)  # 7 // 3 = 2: steps 2, 4, 6
    expected: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(end: StepEnd) -> None:
        expected[end.step] = state_of(end.model)

    train(
        TinyModel(seed=4), TinyTask(), tiny_data(), training=training(max_steps=7),
        evaluation=evaluation(select_best=False), loss=LossConfig(LossWeights(task=1.0)),
        output_dir=tmp_path / "plain", seed=2, on_step_end=snapshot,
    )
    assert [w.step for w in result.waypoints] == [2, 4, 6]
    for waypoint in result.waypoints:
        saved = read_tensors(waypoint.path)
        assert all(torch.equal(saved[k], v) for k, v in expected[waypoint.step].items())
    target = read_tensors(result.target_dir / "model.safetensors")
    assert all(torch.equal(target[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(target[k], v) for k, v in expected[7].items())
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest == {
        "format": 1,
        "total_steps": 7,
        "waypoints": {str(s): f"waypoints/step-{s:08d}.safetensors" for s in (2, 4, 6)},
    }
    assert result.metrics.keys() == {"accuracy"}
    assert result.wall_seconds is not None and result.wall_seconds > 0


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    _, result = _finetune(tmp_path, count=2, max_steps=4)
    stored = json.loads(json.dumps(result.to_dict(tmp_path)))
    assert stored["target_dir"] == "target"
    assert stored["wall_seconds"] > 0
    assert FinetuneResult.from_dict(stored, tmp_path) == result


def test_more_waypoints_than_steps_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CaldError, match="teacher.num_waypoints = 5 is more than the 3 steps of the teacher fine-tuning run"):
        _finetune(tmp_path, count=5, max_steps=3)


def test_a_manifest_naming_a_missing_file_is_refused(tmp_path: Path) -> None:
    _, result = _finetune(tmp_path, count=2, max_steps=4)
    result.waypoints[0].path.unlink()
    with pytest.raises(CheckpointError, match=f"waypoint manifest {result.manifest_path}: step 2 file .* is missing"):
        read_waypoints(tmp_path)
