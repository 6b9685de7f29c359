"""Which rows make each micro-batch, on which process, in which seeded order.

The engine shards batches itself instead of letting accelerate wrap the loader: the order of
an epoch is a pure function of ``(seed, epoch)``, so a resumed run rebuilds it and skips the
micro-batches it had already used, and every process holds the same number of them (so that
gradient synchronisation never waits on a process that ran out of data). Grouping rows of
similar length keeps the padded area, and so the wasted compute, small for text and audio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..contracts import TaskData
from ..errors import CaldError
from ..spec.sections import TrainingSection


class LengthGroupedBatchSampler:
    """Batches of indices whose rows have similar lengths, in a seeded random order.

    Each epoch the indices are shuffled, cut into megabatches of ``megabatch_batches`` batches,
    sorted by length (longest first) inside each megabatch, and cut into batches of at most
    ``batch_size`` rows and, with ``max_tokens``, at most ``max_tokens`` padded positions
    (``longest row * rows``); a row longer than ``max_tokens`` gets a batch of its own. The
    batches are then shuffled, except that the one with the most padded positions comes first,
    so that an out-of-memory error shows on the first step rather than hours later.

    The order depends only on ``seed`` and the epoch given to :meth:`set_epoch`, so a resumed
    run sees the same batches. Without ``drop_last`` every index appears exactly once per epoch;
    with it, batches left short because their megabatch ran out of rows are dropped.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        megabatch_batches: int = 50,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.megabatch_size = megabatch_batches * batch_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batch order :meth:`__iter__` yields next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build(np.random.default_rng([self.seed, self.epoch])))
        return self._cache[1]

    def _build(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.megabatch_size):
            megabatch = order[start : start + self.megabatch_size]
            by_length = megabatch[np.argsort(-self.lengths[megabatch], kind="stable")]
            batches.extend(self._cut(by_length.tolist()))
        if self.shuffle and batches:
            batches = [batches[i] for i in rng.permutation(len(batches))]
            largest = max(range(len(batches)), key=lambda i: self._padded_size(batches[i]))
            batches.insert(0, batches.pop(largest))
        return batches

    def _cut(self, indices: list[int]) -> list[list[int]]:
        """Greedy cut of longest-first indices into batches that respect both caps."""
        batches: list[list[int]] = []
        current: list[int] = []
        for index in indices:
            if current and not self._fits(current, index):
                batches.append(current)
                current = []
            current.append(index)
        if current and (not self.drop_last or len(current) == self.batch_size):
            batches.append(current)
        return batches

    def _fits(self, batch: list[int], index: int) -> bool:
        if len(batch) >= self.batch_size:
            return False
        if self.max_tokens is None:
            return True
        return self._padded_size([*batch, index]) <= self.max_tokens

    def _padded_size(self, batch: list[int]) -> int:
        return int(self.lengths[batch].max()) * len(batch)


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
