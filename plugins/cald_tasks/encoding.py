"""Encoding every built-in task shares: raw splits -> encoded splits -> :class:`TaskData`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import datasets

from cald_framework.contracts import HeadSpec, TaskData
from cald_framework.errors import DataError

from .loading import RawSplit, RawSplits
from .options import DataOptions
from .rows import RowEncoder, encode_split


@dataclass(frozen=True)
class EncodedSplits:
    """Both splits encoded, with the count of bad rows each dropped, for the task's metadata."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    #: bad rows dropped per split (``on_bad_row = "skip"``)
    skipped: dict[str, int]

    def map(self, function: Callable[[datasets.Dataset, str], datasets.Dataset]) -> EncodedSplits:
        """Apply a further dataset-level step (e.g. packing) to both splits, each with its role
        ("training" or "evaluation") for messages."""
        evaluation = None if self.eval is None else function(self.eval, "evaluation")
        return replace(self, train=function(self.train, "training"), eval=evaluation)

    def task_data(
        self,
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        head: HeadSpec,
        metadata: dict[str, Any],
        grouped_by_length: bool = True,
    ) -> TaskData:
        """Rows formatted as numpy (fast for long audio), with lengths for grouped batching."""
        return TaskData(
            train=self.train.with_format("numpy"),
            eval=None if self.eval is None else self.eval.with_format("numpy"),
            collate=collate,
            head=head,
            train_lengths=list(self.train["length"]) if grouped_by_length else None,
            metadata={**metadata, "skipped_rows": dict(self.skipped)},
        )


def encode_splits(options: DataOptions, raw: RawSplits, encoder: RowEncoder) -> EncodedSplits:
    """Encode the first ``max_*_samples`` rows of each split under the bad-row policy."""
    train, skipped_train = _encode(
        raw.train, options.max_train_samples, options, encoder, "training"
    )
    if raw.eval is None:
        return EncodedSplits(train, None, {"train": skipped_train, "eval": 0})
    evaluation, skipped_eval = _encode(
        raw.eval, options.max_eval_samples, options, encoder, "evaluation"
    )
    return EncodedSplits(train, evaluation, {"train": skipped_train, "eval": skipped_eval})


def _encode(
    raw: RawSplit, limit: int | None, options: DataOptions, encoder: RowEncoder, role: str
) -> tuple[datasets.Dataset, int]:
    rows, skipped = encode_split(
        raw.head(limit), encoder, options.on_bad_row, options.cache_dir, f"Encoding {role} rows"
    )
    if len(rows) == 0:
        names = ", ".join(origin.name for origin in raw.origins)
        raise DataError(f"{names}: no usable {role} rows ({skipped} skipped)")
    return rows, skipped
