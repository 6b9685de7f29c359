"""Turning raw rows into model-ready rows, with the bad-row policy and a persistent cache.

A task supplies a :class:`RowEncoder`: ``prepare`` checks and cleans one row (raising
:class:`RowProblem` when it cannot be used) and ``encode`` tokenises or extracts features for a
batch of prepared rows at once, which is where the speed is. The work runs through
``datasets.map`` into a cache file named by a fingerprint of the input rows and the encoder, so
a second run with the same data and preprocessor reads the result instead of recomputing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import datasets
from datasets.fingerprint import Hasher

from cald_framework import __version__
from cald_framework.errors import DataError

from .loading import Origin, RawSplit


class PreprocessedInputs:
    """Column bookkeeping of inputs made by a tokenizer or feature extractor (``preprocessor``)."""

    preprocessor: Any

    @property
    def model_columns(self) -> tuple[str, ...]:
        """What the preprocessor makes for the model, less the mask (collate rebuilds it)."""
        names = self.preprocessor.model_input_names
        return tuple(name for name in names if name != "attention_mask")

    @property
    def columns(self) -> tuple[str, ...]:
        """The encoded columns: the model's, and each row's length for grouped batching."""
        return (*self.model_columns, "length")

    def with_lengths(self, encoded: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """``encoded`` plus the length of each row's first model input."""
        encoded["length"] = [len(values) for values in encoded[self.model_columns[0]]]
        return encoded


class RowProblem(Exception):
    """Why a row cannot be used; the caller adds the file and row number."""


class RowEncoder(Protocol):
    #: the columns ``encode`` returns (also for an empty batch)
    columns: tuple[str, ...]
    #: rows per ``encode`` call and per cache write (small for audio, whose rows are large)
    batch_size: int

    def prepare(self, row: dict[str, Any], origin: Origin) -> Any:
        """Check one row and return what ``encode`` needs from it, or raise :class:`RowProblem`."""
        ...

    def encode(self, items: list[Any]) -> dict[str, list[Any]]:
        """Encode a non-empty batch of prepared rows into ``columns``."""
        ...


class Target(Protocol):
    """What a row is trained to predict: a class id, a token sequence, ..."""

    columns: tuple[str, ...]

    def prepare(self, row: dict[str, Any]) -> Any:
        """The row's target, or :class:`RowProblem`."""
        ...

    def encode(self, values: list[Any]) -> dict[str, list[Any]]: ...


@dataclass(frozen=True)
class LabelledEncoder:
    """Model inputs and a target; the target is checked first, as it is the cheaper check."""

    inputs: RowEncoder
    target: Target

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.inputs.columns, *self.target.columns)

    @property
    def batch_size(self) -> int:
        return self.inputs.batch_size

    def prepare(self, row: dict[str, Any], origin: Origin) -> tuple[Any, Any]:
        target = self.target.prepare(row)
        return self.inputs.prepare(row, origin), target

    def encode(self, items: list[tuple[Any, Any]]) -> dict[str, list[Any]]:
        encoded = self.inputs.encode([inputs for inputs, _ in items])
        encoded.update(self.target.encode([target for _, target in items]))
        return encoded


@dataclass(frozen=True)
class EncodeRows:
    """The ``datasets.map`` function: prepare each row, apply the policy, encode the rest."""

    encoder: RowEncoder
    origins: tuple[Origin, ...]
    on_bad_row: Literal["error", "skip"]

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        items = []
        for index in range(len(batch["_row"])):
            row = {name: values[index] for name, values in batch.items()}
            origin = self.origins[row["_origin"]]
            try:
                items.append(self.encoder.prepare(row, origin))
            except RowProblem as problem:
                if self.on_bad_row == "error":
                    raise DataError(f"{origin.name} row {row['_row']}: {problem}") from None
        if not items:
            return {name: [] for name in self.encoder.columns}
        return self.encoder.encode(items)


def encode_split(
    raw: RawSplit,
    encoder: RowEncoder,
    on_bad_row: Literal["error", "skip"],
    cache_dir: str | None,
    desc: str,
) -> tuple[datasets.Dataset, int]:
    """The encoded rows, and how many bad rows were skipped."""
    function = EncodeRows(encoder, raw.origins, on_bad_row)
    encoded = cached_map(raw.rows, function, cache_dir, desc, encoder.batch_size)
    return encoded, len(raw.rows) - len(encoded)


def cached_map(
    rows: datasets.Dataset,
    function: Callable[[dict[str, list[Any]]], dict[str, list[Any]]],
    cache_dir: str | None,
    desc: str,
    batch_size: int = 1000,
) -> datasets.Dataset:
    """``rows.map(function, batched=True)`` replacing all columns, cached on disk.

    The fingerprint hashes the input's fingerprint, the function with everything it holds (the
    tokenizer or feature extractor included) and the framework version, so in-memory inputs are
    cached too and a change of preprocessor never reuses a stale file.
    """
    fingerprint = Hasher.hash([rows._fingerprint, function, batch_size, __version__])
    folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "cald_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    return rows.map(
        function,
        batched=True,
        batch_size=batch_size,
        writer_batch_size=batch_size,
        remove_columns=rows.column_names,
        new_fingerprint=fingerprint,
        cache_file_name=str(folder / f"{fingerprint}.arrow"),
        desc=desc,
    )
