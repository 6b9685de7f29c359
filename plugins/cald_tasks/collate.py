"""Batching encoded rows: dynamic padding, the attention mask and the labels.

Padding to the longest row of a batch (never to a fixed maximum) keeps the padded area, and so
the wasted compute, small for both text and audio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: label value that losses ignore (padding of label sequences)
IGNORE_INDEX = -100


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


@dataclass(frozen=True)
class Collator:
    """Pads model inputs to the longest row of the batch (never to a fixed length).

    Returns ``{"inputs": {columns..., "attention_mask"}, "labels": ..., extras..., counts...}``;
    the mask (integer, as tokenizers make it) comes from the length of the first input column.
    A picklable object rather than a closure, so data-loader workers can use it.
    """

    input_columns: tuple[str, ...]
    #: pad value per input column (default 0)
    pad_values: Mapping[str, float] = field(default_factory=dict)
    label_column: str = "labels"
    #: ``True``: labels are sequences, padded with :data:`IGNORE_INDEX`; ``False``: one per row
    label_sequences: bool = False
    #: columns passed through as Python lists (e.g. reference transcripts)
    extras: tuple[str, ...] = ()
    #: integer columns passed through as one ``long`` tensor each (e.g. transcript lengths)
    counts: tuple[str, ...] = ()

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, Any]:
        inputs = {
            name: pad_sequences([row[name] for row in rows], self.pad_values.get(name, 0))
            for name in self.input_columns
        }
        lengths = [len(row[self.input_columns[0]]) for row in rows]
        inputs["attention_mask"] = length_mask(lengths).long()
        labels = [row[self.label_column] for row in rows]
        batch: dict[str, Any] = {
            "inputs": inputs,
            "labels": (
                pad_sequences(labels, IGNORE_INDEX).long()
                if self.label_sequences
                else torch.as_tensor(labels, dtype=torch.long)
            ),
        }
        batch.update({name: [str(row[name]) for row in rows] for name in self.extras})
        batch.update(
            {name: torch.as_tensor([row[name] for row in rows]).long() for name in self.counts}
        )
        return batch
