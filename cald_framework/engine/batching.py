"""Which rows make each micro-batch, on which process, in which seeded order.

The engine shards batches itself instead of letting accelerate wrap the loader: the order of
an epoch is a pure function of ``(seed, epoch)``, so a resumed run rebuilds it and skips the
micro-batches it had already used, and every process holds the same number of them (so that
gradient synchronisation never waits on a process that ran out of data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..contracts import TaskData
from ..data import LengthGroupedBatchSampler
from ..errors import CaldError
from ..spec.sections import TrainingSection


def _global_batches(data: TaskData, training: TrainingSection, seed: int, epoch: int) -> list[list[int]]:
    if training.group_by_length and data.train_lengths is not None:
        sampler = LengthGroupedBatchSampler(
            data.train_lengths,
            training.batch_size,
            max_tokens=training.max_tokens_per_batch,
            shuffle=True,
            seed=seed,
        )
        sampler.set_epoch(epoch)
        return list(sampler)
    order = np.random.default_rng([seed, epoch]).permutation(len(data.train)).tolist()
    return [order[i : i + training.batch_size] for i in range(0, len(order), training.batch_size)]


def epoch_batches(
    data: TaskData, training: TrainingSection, *, seed: int, epoch: int, rank: int, world: int
) -> list[list[int]]:
    """This process's micro-batches of ``epoch``; the last ``len % world`` global batches are dropped."""
    batches = _global_batches(data, training, seed, epoch)
    usable = len(batches) - len(batches) % world
    return batches[rank:usable:world]


def updates_in(micro_batches: int, training: TrainingSection) -> int:
    """Optimizer steps in an epoch: each takes ``grad_accum`` micro-batches; a remainder is dropped."""
    updates = micro_batches // training.grad_accum
    if updates == 0:
        raise CaldError(
            f"the training set is too small: each process gets {micro_batches} micro-batches per "
            f"epoch, fewer than training.grad_accum = {training.grad_accum}"
        )
    return updates


def total_steps(training: TrainingSection, updates_per_epoch: int) -> int:
    """``max_steps`` when set, else ``ceil(epochs * updates_per_epoch)``."""
    if training.max_steps is not None:
        return training.max_steps
    return math.ceil(training.epochs * updates_per_epoch)


def sequential_batches(size: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, size))) for i in range(0, size, batch_size)]


def make_loader(
    dataset: Any, batches: Sequence[Sequence[int]], collate: Any, num_workers: int, seed: int
) -> DataLoader:
    """A loader over fixed batches; its own generator keeps it from drawing on the global RNG."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a nested batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_rows(batch: Mapping[str, Any]) -> int:
    """How many rows a collated batch holds (the first dimension of its first model input)."""
    first = next(iter(batch["inputs"].values()))
    return int(first.shape[0])
