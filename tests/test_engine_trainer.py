"""The training loop: accumulation, non-finite steps, evaluation and best checkpoint, logs, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.contracts import LossWeights
from cald_framework.engine import LossConfig, StepEnd, train
from cald_framework.engine.checkpoints import list_checkpoints, open_checkpoint
from cald_framework.errors import CaldError
from cald_framework.testing.engine import TinyModel, TinyTask, evaluation, state_of, tiny_data, training

TASK_ONLY = LossConfig(LossWeights(task=1.0))


def _events(path: Path, kind: str) -> list[dict[str, Any]]:
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def _train(model: TinyModel, out: Path, task: TinyTask | None = None, **changes: Any) -> Any:
    eval_settings = changes.pop("evaluation", evaluation())
    return train(
        model, task or TinyTask(), tiny_data(), training=training(**changes),
        evaluation=eval_settings, loss=TASK_ONLY, output_dir=out, seed=0,
    )


def test_gradient_accumulation_matches_one_large_batch(tmp_path: Path) -> None:
    large, accumulated = TinyModel(dropout=0.0), TinyModel(dropout=0.0)
    _train(large, tmp_path / "large", batch_size=4, max_steps=4)
    _train(accumulated, tmp_path / "accumulated", batch_size=2, grad_accum=2, max_steps=4)
    for name, value in large.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[name], value, rtol=0, atol=1e-12)


def test_steps_follow_epochs_when_max_steps_is_unset(tmp_path: Path) -> None:
    result = _train(TinyModel(), tmp_path, max_steps=None, epochs=1.5, batch_size=4, grad_accum=2)
    assert (result.steps, result.total_steps) == (5, 5)  # 24 rows: 6 micro-batches, 3 steps an epoch
    epochs = [event["epoch"] for event in _events(tmp_path, "train")]
    assert epochs == pytest.approx([1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3])


def test_nonfinite_step_is_skipped_and_logged(tmp_path: Path) -> None:
    model = TinyModel()
    before: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(end: StepEnd) -> None:
        before[end.step] = state_of(end.model)

    train(
        model, TinyTask(nan_at={2}), tiny_data(), training=training(), evaluation=evaluation(),
        loss=TASK_ONLY, output_dir=tmp_path, seed=0, on_step_end=snapshot,
    )
    assert all(torch.equal(before[2][name], before[3][name]) for name in before[2])  # no update
    assert not torch.equal(before[3]["head.weight"], before[4]["head.weight"])  # updates resume
    (skipped,) = _events(tmp_path, "nonfinite")
    assert (skipped["step"], skipped["loss"], skipped["task"], skipped["streak"]) == (3, "nan", "nan", 1)
    assert [event["step"] for event in _events(tmp_path, "train")] == [1, 2, 3, 4, 5, 6]
    assert "loss" not in _events(tmp_path, "train")[2]  # the window held only the skipped step


def test_consecutive_nonfinite_steps_stop_with_a_checkpoint(tmp_path: Path) -> None:
    task = TinyTask(nan_at={1, 2, 3})
    with pytest.raises(CaldError) as raised:
        _train(TinyModel(), tmp_path, task=task, max_nonfinite_steps=3)
    checkpoint = tmp_path / "checkpoints" / "step-00000004"
    assert str(raised.value) == (
        "training stopped at step 4: the loss was not finite for 3 steps in a row "
        f"(training.max_nonfinite_steps); state saved in {checkpoint}"
    )
    assert open_checkpoint(checkpoint).meta["progress"]["nonfinite_streak"] == 3
    assert [event["step"] for event in _events(tmp_path, "nonfinite")] == [2, 3, 4]


def test_best_checkpoint_is_kept_and_restored(tmp_path: Path) -> None:
    model = TinyModel()
    result = _train(model, tmp_path, max_steps=6, keep_last=1, evaluation=evaluation(every=1))
    evals = _events(tmp_path, "eval")
    accuracies = [event["metrics"]["accuracy"] for event in evals]
    best_step = accuracies.index(max(accuracies)) + 1
    assert result.best_step == best_step and result.best_metrics["accuracy"] == max(accuracies)
    assert [event["best"] for event in evals][best_step - 1]
    kept = {path.name for path in list_checkpoints(tmp_path / "checkpoints")}
    assert kept == {f"step-{best_step:08d}", "step-00000006"}
    best = open_checkpoint(result.best_checkpoint).part("model")
    assert all(torch.equal(best[name], value) for name, value in model.state_dict().items())
    assert result.metrics == result.best_metrics and result.model is model


def test_evaluation_metric_must_exist(tmp_path: Path) -> None:
    with pytest.raises(CaldError, match="evaluation.metric 'f1' is not among the task's metrics: accuracy"):
        _train(TinyModel(), tmp_path, max_steps=1, evaluation=evaluation(metric="f1"))


def test_fp16_on_cpu_and_missing_tracker_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CaldError, match=r"training.precision = 'fp16' needs a GPU \(this run is on cpu\)"):
        _train(TinyModel(), tmp_path, precision="fp16")
    with pytest.raises(CaldError, match=r"training.trackers names 'wandb' but its package is not installed \(pip install wandb\)"):
        _train(TinyModel(), tmp_path, trackers=["wandb"])


def test_bf16_trains_with_finite_losses(tmp_path: Path) -> None:
    model = TinyModel().float()
    start = state_of(model)
    _train(model, tmp_path, precision="bf16", max_steps=2)
    losses = [event["loss"] for event in _events(tmp_path, "train")]
    assert len(losses) == 2 and all(isinstance(x, float) for x in losses)
    assert not torch.equal(start["head.weight"], model.head.weight)


def test_too_few_batches_for_accumulation(tmp_path: Path) -> None:
    with pytest.raises(CaldError, match="each process gets 3 micro-batches per epoch, fewer than training.grad_accum = 4"):
        _train(TinyModel(), tmp_path, batch_size=8, grad_accum=4)
