"""Option models of the built-in tasks: one shared data block, mixed into each task's own fields.

Each field's docstring becomes its description in the spec's JSON Schema, for editors.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from cald_framework.contracts import Location, PluginOptions

#: ``dataset`` values that name a local-file reader rather than a hub dataset
LOCAL_READERS = ("csv", "json", "parquet", "text", "audiofolder")

DataFiles = Location | list[Location] | dict[str, Location | list[Location]]


class DocumentedOptions(PluginOptions):
    model_config = ConfigDict(use_attribute_docstrings=True)


class DataOptions(DocumentedOptions):
    """Where the rows come from, which of them are used, and what a bad row does."""

    dataset: Location
    """A hub dataset id, or a local reader (csv, json, parquet, text, audiofolder) that reads
    data_files."""
    dataset_config: str | None = None
    """The hub dataset's configuration name."""
    data_files: DataFiles | None = None
    """Local files (directories for audiofolder): a table of split name to files, or files that
    make the train split."""
    train_split: str = "train"
    split_column: str | None = None
    """A column naming each row's split: the train data (data_files as one file or a list, or the
    hub's train split) is divided by its value, matched against train_split and eval_split."""
    eval_split: str | None = "validation"
    """The evaluation split; none: no evaluation data."""
    eval_from_train: float | None = Field(default=None, gt=0, lt=1)
    """Carve this fraction of the training rows out for evaluation, with the experiment's seed."""
    max_train_samples: int | None = Field(default=None, ge=1)
    """Use only the first N training rows."""
    max_eval_samples: int | None = Field(default=None, ge=1)
    """Use only the first N evaluation rows."""
    on_bad_row: Literal["error", "skip"] = "error"
    """error: stop at the first unusable row, naming its file and row; skip: drop and count."""
    cache_dir: str | None = None
    """Where loaded and preprocessed data is cached (default: the datasets library's cache)."""

    @model_validator(mode="after")
    def _check_data_settings(self) -> DataOptions:
        if self.dataset in LOCAL_READERS and self.data_files is None:
            raise ValueError(f"dataset = {self.dataset!r} reads local files: set data_files")
        if self.eval_from_train is not None and "eval_split" in self.model_fields_set:
            raise ValueError("set either eval_split or eval_from_train, not both")
        if self.split_column is not None and isinstance(self.data_files, dict):
            raise ValueError("split_column divides one table: give data_files as a file or a list")
        return self

    @property
    def evaluation_split(self) -> str | None:
        """The split to load for evaluation (``None`` when carved from train or absent)."""
        return None if self.eval_from_train is not None else self.eval_split

    def files_by_split(self) -> dict[str, list[str]] | None:
        """``data_files`` as ``{split: [paths]}``."""
        if self.data_files is None:
            return None
        by_split = (
            self.data_files if isinstance(self.data_files, dict) else {"train": self.data_files}
        )
        return {split: [f] if isinstance(f, str) else list(f) for split, f in by_split.items()}


class TextOptions(DataOptions):
    text_column: str = "text"


class LabelOptions(DocumentedOptions):
    label_column: str = "label"
    label_names: list[str] | None = Field(default=None, min_length=2)
    """The labels in id order; default: the training labels, sorted (numerically if integers)."""

    @model_validator(mode="after")
    def _check_unique(self) -> LabelOptions:
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise ValueError("label_names has duplicates")
        return self


class AudioOptions(DataOptions):
    audio_column: str = "audio"
    """A path (relative to the manifest's directory) or, in hub data, an audio record."""
    max_seconds: float | None = Field(default=None, gt=0)
    on_too_long: Literal["crop", "reject"] = "crop"
    """Audio longer than max_seconds is cropped, or rejected as a bad row."""


class LossBalanceOptions(DocumentedOptions):
    loss_normalisation: Literal["none", "transcript_length"] | float = "none"
    """What the cross-entropy is divided by, weighing it against the distillation terms as the
    paper's speech code did. none: the mean over rows; transcript_length: the sum over rows
    divided by the rows' summed transcript lengths in characters (read from transcript_column;
    the paper's SLURP runs); a number: the mean divided by it (the paper's VoxCeleb1 runs: 3)."""
    transcript_column: str | None = None
    """The transcript of each row, for loss_normalisation = "transcript_length"."""

    @field_validator("loss_normalisation", mode="before")
    @classmethod
    def _named_or_positive(cls, value: Any) -> Any:
        named = value in ("none", "transcript_length")
        positive = type(value) in (int, float) and 0 < value < math.inf
        if not (named or positive):
            raise ValueError(
                f"must be 'none', 'transcript_length' or a number above 0, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _transcript_column_with_its_normalisation(self) -> LossBalanceOptions:
        by_length = self.loss_normalisation == "transcript_length"
        if by_length and self.transcript_column is None:
            raise ValueError("loss_normalisation = 'transcript_length' needs transcript_column")
        if not by_length and self.transcript_column is not None:
            raise ValueError(
                "transcript_column is read only with loss_normalisation = 'transcript_length'"
            )
        return self


class TextClassificationOptions(TextOptions, LabelOptions, LossBalanceOptions):
    head: Literal["mean-linear", "first-token-tanh"] = "mean-linear"
    """The classifier: a linear layer on the mean of the tokens, or RoBERTa's head on the first
    token (dense, tanh, linear), which the paper's NLP code used."""
    text_pair_column: str | None = None
    max_length: int = Field(default=512, ge=2)
    """Tokens per row; longer rows are truncated (a pair loses tokens from its longer side)."""


class AudioClassificationOptions(AudioOptions, LabelOptions, LossBalanceOptions):
    pass


class IntentOptions(AudioOptions, LossBalanceOptions):
    scenario_column: str = "scenario"
    action_column: str = "action"
    intent_column: str | None = None
    """One "scenario<separator>action" column instead of scenario_column and action_column."""
    intent_separator: str = Field(default="_", min_length=1)
    """Joins scenario and action; an intent splits at its first occurrence."""

    @model_validator(mode="after")
    def _check_columns(self) -> IntentOptions:
        both = {"scenario_column", "action_column"} & self.model_fields_set
        if self.intent_column is not None and both:
            raise ValueError(f"set either intent_column or {' and '.join(sorted(both))}, not both")
        return self


class CtcOptions(AudioOptions):
    transcript_column: str = "transcript"
    vocab: list[str] | Location | None = None
    """The output tokens in id order (the blank first, "|" between words), or a file of them:
    a JSON list, a JSON {token: id} object, or one token a line. Default: <blank>, <unk>, | and
    the characters of the training transcripts."""
    text_case: Literal["keep", "lower", "upper"] = "keep"
    """Case folding of transcripts, before the vocabulary is built or applied."""


class CausalLMOptions(TextOptions):
    block_size: int = Field(default=1024, ge=2)
    """Tokens per training row: documents are joined with EOS and cut into blocks of this size."""

    @property
    def max_length(self) -> int:
        """The longest sequence the model sees (what other tasks call max_length)."""
        return self.block_size
