"""Evaluation of a model (student or teacher) on a task's evaluation set."""

from __future__ import annotations

import torch
from torch import nn

from ..contracts import Task, TaskData
from ..spec.sections import TrainingSection
from .batching import make_loader, sequential_batches, to_device
from .precision import Precision


def evaluate(
    model: nn.Module,
    task: Task,
    data: TaskData,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """The task's metrics over ``data.eval``, in eval mode; the model's mode is restored after."""
    accumulator = task.metrics()
    batches = sequential_batches(len(data.eval), batch_size)
    autocast = precision.autocast() if precision else torch.autocast(device.type, enabled=False)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for batch in make_loader(data.eval, batches, data.collate, num_workers, seed=0):
                batch = to_device(batch, device)
                accumulator.update(model(**batch["inputs"]), batch)
    finally:
        model.train(was_training)
    return {name: float(value) for name, value in accumulator.compute().items()}


def evaluate_model(
    model: nn.Module,
    task: Task,
    data: TaskData,
    training: TrainingSection,
    *,
    device: torch.device | None = None,
    precision: Precision | None = None,
) -> dict[str, float]:
    """:func:`evaluate` with the batch size, workers and precision of ``training``.

    By default on this machine's accelerator (the model is moved there).
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    return evaluate(
        model,
        task,
        data,
        batch_size=training.eval_batch_size or training.batch_size,
        device=device,
        precision=precision or Precision(training.precision, device),
        num_workers=training.num_workers,
    )
