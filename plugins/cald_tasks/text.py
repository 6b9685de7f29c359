"""Text rows: checking text cells and tokenising them in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from cald_framework.errors import DataError

from .loading import Origin
from .rows import PreprocessedInputs, RowProblem


def text_cell(row: dict[str, Any], column: str) -> str:
    """The row's text in ``column``; empty or missing text is a :class:`RowProblem`."""
    value = row[column]
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if not text.strip():
        raise RowProblem(f"empty text in column {column!r}")
    return text


def require_tokenizer(preprocessor: Any, task: str) -> PreTrainedTokenizerBase:
    if not isinstance(preprocessor, PreTrainedTokenizerBase):
        raise DataError(f"{task} needs a tokenizer; the source gave {type(preprocessor).__name__}")
    return preprocessor


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that fills padded positions; it is masked, so tokenizers without one use 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@dataclass(frozen=True)
class TextInputs(PreprocessedInputs):
    """A text (or a text pair) tokenised and truncated to ``max_length``; never padded here."""

    preprocessor: PreTrainedTokenizerBase
    text_column: str
    pair_column: str | None
    max_length: int
    batch_size: ClassVar[int] = 1000

    def prepare(self, row: dict[str, Any], origin: Origin) -> tuple[str, str | None]:
        pair = None if self.pair_column is None else text_cell(row, self.pair_column)
        return text_cell(row, self.text_column), pair

    def encode(self, items: list[tuple[str, str | None]]) -> dict[str, list[Any]]:
        texts = [text for text, _ in items]
        pairs = None if self.pair_column is None else [pair for _, pair in items]
        tokens = self.preprocessor(texts, pairs, truncation=True, max_length=self.max_length)
        return self.with_lengths({name: tokens[name] for name in self.model_columns})
