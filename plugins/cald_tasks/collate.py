"""Batching encoded rows: dynamic padding, the attention mask and the labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from cald_framework.data import length_mask, pad_sequences

#: label value that losses ignore (padding of label sequences)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Collator:
    """Pads model inputs to the longest row of the batch (never to a fixed length).

    Returns ``{"inputs": {columns..., "attention_mask"}, "labels": ..., extras...}``; the mask
    (integer, as tokenizers make it) comes from the length of the first input column. A
    picklable object rather than a closure, so data-loader workers can use it.
    """

    input_columns: tuple[str, ...]
    #: pad value per input column (default 0)
    pad_values: Mapping[str, float] = field(default_factory=dict)
    label_column: str = "labels"
    #: ``True``: labels are sequences, padded with :data:`IGNORE_INDEX`; ``False``: one per row
    label_sequences: bool = False
    #: columns passed through as Python lists (e.g. reference transcripts)
    extras: tuple[str, ...] = ()

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
        return batch
