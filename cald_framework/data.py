"""Family-neutral batching: dynamic padding and length-grouped batch sampling.

Padding to the longest row of a batch (never to a fixed maximum) and grouping rows of similar
length keep the padded area, and so the wasted compute, small for both text and audio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def pad_sequences(sequences: Sequence[Any], pad_value: float = 0) -> torch.Tensor:
    """Stack arrays of different lengths along a new batch axis, right-padding the first axis.

    Every row must have the same trailing shape; the dtype is that of the first row. Rows are
    copied once into the batch, so read-only (memory-mapped) arrays are fine.
    """
    arrays = [np.asarray(row) for row in sequences]
    longest = max(array.shape[0] for array in arrays)
    first = arrays[0]
    batch = np.full((len(arrays), longest, *first.shape[1:]), pad_value, dtype=first.dtype)
    for index, array in enumerate(arrays):
        batch[index, : array.shape[0]] = array
    return torch.from_numpy(batch)


def length_mask(lengths: Sequence[int]) -> torch.Tensor:
    """``[B, max(lengths)]`` bool mask, ``True`` on the first ``lengths[b]`` positions."""
    lengths_tensor = torch.as_tensor(lengths, dtype=torch.long)
    positions = torch.arange(int(lengths_tensor.max()))
    return positions[None, :] < lengths_tensor[:, None]


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
