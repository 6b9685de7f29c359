"""How a task reads its model inputs, text or audio, as mixins for the task classes."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from .audio import AudioInputs, require_feature_extractor
from .collate import Collator
from .options import AudioOptions, TextClassificationOptions
from .text import TextInputs, pad_id, require_tokenizer


class TextModality:
    """Tokenised ``text_column`` (and ``text_pair_column``), padded with the tokenizer's pad id."""

    modality: ClassVar[Literal["text", "audio"]] = "text"
    options: TextClassificationOptions
    name: ClassVar[str]

    def input_columns(self) -> list[str]:
        pair = self.options.text_pair_column
        return [self.options.text_column, *([pair] if pair else [])]

    def inputs(self, preprocessor: Any) -> TextInputs:
        return TextInputs(
            require_tokenizer(preprocessor, self.name),
            self.options.text_column,
            self.options.text_pair_column,
            self.options.max_length,
        )

    def collator(self, inputs: TextInputs, **labels: Any) -> Collator:
        return Collator(inputs.model_columns, {"input_ids": pad_id(inputs.preprocessor)}, **labels)


class AudioModality:
    """Audio from ``audio_column`` through the feature extractor, padded with its padding value."""

    modality: ClassVar[Literal["text", "audio"]] = "audio"
    options: AudioOptions
    name: ClassVar[str]

    def input_columns(self) -> list[str]:
        return [self.options.audio_column]

    def inputs(self, preprocessor: Any) -> AudioInputs:
        return AudioInputs(
            require_feature_extractor(preprocessor, self.name),
            self.options.audio_column,
            self.options.max_seconds,
            self.options.on_too_long,
        )

    def collator(self, inputs: AudioInputs, **labels: Any) -> Collator:
        padding = inputs.preprocessor.padding_value
        pad_values = {name: padding for name in inputs.model_columns}
        return Collator(inputs.model_columns, pad_values, **labels)
