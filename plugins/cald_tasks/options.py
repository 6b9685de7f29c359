"""Option models of the built-in tasks: one shared data block, mixed into each task's own fields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cald_framework.contracts import Location, PluginOptions

#: ``dataset`` values that name a local-file reader rather than a hub dataset
LOCAL_READERS = ("csv", "json", "parquet", "text", "audiofolder")

DataFiles = Location | list[Location] | dict[str, Location | list[Location]]


class DataOptions(PluginOptions):
    """Where the rows come from, which of them are used, and what a bad row does."""

    #: a hub dataset id, or one of :data:`LOCAL_READERS` together with ``data_files``
    dataset: Location
    #: the hub dataset's configuration name
    dataset_config: str | None = None
    #: local files (or, for ``audiofolder``, directories); a dict maps split names to them,
    #: anything else is the ``train`` split
    data_files: DataFiles | None = None
    train_split: str = "train"
    #: a column that names each row's split: the rows of the ``train`` data (``data_files`` as
    #: one file or a list, or the hub's ``train`` split) are divided by its value, matched
    #: against ``train_split`` and ``eval_split``
    split_column: str | None = None
    #: ``None``: no evaluation data
    eval_split: str | None = "validation"
    #: carve this fraction of the training rows out as the evaluation split (seeded)
    eval_from_train: float | None = Field(default=None, gt=0, lt=1)
    #: keep only the first N rows of a split (after ``eval_from_train``)
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)
    #: ``error`` stops at the first unusable row, naming its file and row; ``skip`` drops and counts
    on_bad_row: Literal["error", "skip"] = "error"
    #: where ``datasets`` keeps loaded and preprocessed data (default: its own cache)
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _check_sources(self) -> DataOptions:
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


class LabelOptions(PluginOptions):
    label_column: str = "label"
    #: the label order (ids follow it); default: the training labels, sorted
    label_names: list[str] | None = Field(default=None, min_length=2)

    @model_validator(mode="after")
    def _check_unique(self) -> LabelOptions:
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise ValueError("label_names has duplicates")
        return self


class AudioOptions(DataOptions):
    #: a path (relative to the manifest's directory) or, for hub data, an audio dict
    audio_column: str = "audio"
    max_seconds: float | None = Field(default=None, gt=0)
    #: longer audio is cropped to ``max_seconds`` or rejected as a bad row
    on_too_long: Literal["crop", "reject"] = "crop"


class TextClassificationOptions(TextOptions, LabelOptions):
    text_pair_column: str | None = None
    #: tokens per row; longer rows are truncated (pairs: the longer side first)
    max_length: int = Field(default=512, ge=2)


class AudioClassificationOptions(AudioOptions, LabelOptions):
    pass


class IntentOptions(AudioOptions):
    scenario_column: str = "scenario"
    action_column: str = "action"
    #: a single "scenario<separator>action" column instead of the two above
    intent_column: str | None = None
    #: splits ``intent_column`` at its first occurrence
    intent_separator: str = Field(default="_", min_length=1)

    @model_validator(mode="after")
    def _check_columns(self) -> IntentOptions:
        both = {"scenario_column", "action_column"} & self.model_fields_set
        if self.intent_column is not None and both:
            raise ValueError(f"set either intent_column or {' and '.join(sorted(both))}, not both")
        return self


class CtcOptions(AudioOptions):
    transcript_column: str = "transcript"
    #: the output tokens, id = position, blank first and "|" between words; or a file with them
    #: (a JSON list, a JSON ``{token: id}`` object, or one token a line); default: ``<blank>``,
    #: ``<unk>``, ``|`` and the characters of the training transcripts
    vocab: list[str] | Location | None = None
    text_case: Literal["keep", "lower", "upper"] = "keep"


class CausalLMOptions(TextOptions):
    #: tokens per training row; documents are joined with EOS and cut into blocks
    block_size: int = Field(default=1024, ge=2)
