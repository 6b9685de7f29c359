"""Sequence classification of text or audio: one label per row, cross-entropy, accuracy and F1."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar, Literal

import datasets
import torch
import torch.nn.functional as F

from cald_framework.contracts import (
    CaldOutput,
    HeadSpec,
    MetricAccumulator,
    Task,
    TaskData,
)
from cald_framework.errors import CaldError

from .balance import TRANSCRIPT_LENGTH, WithTranscriptLength, normalised_loss
from .collate import Collator
from .encoding import encode_splits
from .labels import ColumnLabeler, Labeler, LabelIndex
from .loading import load_splits
from .metrics import accuracy, class_f1, macro_f1
from .modality import AudioModality, TextModality
from .options import AudioClassificationOptions, TextClassificationOptions
from .rows import LabelledEncoder
from .tensors import upcast

Scores = Callable[[list[int], list[int]], dict[str, float]]
HeadKind = Literal["classification", "first_token_classification"]


class PredictionAccumulator(MetricAccumulator):
    """Collects arg-max predictions and reference ids; ``score`` turns them into metrics."""

    def __init__(self, score: Scores):
        self.score = score
        self.predictions: list[int] = []
        self.references: list[int] = []

    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None:
        self.predictions.extend(output.logits.argmax(-1).tolist())
        self.references.extend(batch["labels"].tolist())

    def compute(self) -> dict[str, float]:
        return self.score(self.predictions, self.references)


def class_scores(
    num_labels: int, predictions: list[int], references: list[int]
) -> dict[str, float]:
    """Accuracy and macro F1; for two classes also ``f1``, of class 1 (the GLUE convention)."""
    scores = {
        "accuracy": accuracy(predictions, references),
        "macro_f1": macro_f1(predictions, references),
    }
    if num_labels == 2:
        scores["f1"] = class_f1(predictions, references, positive=1)
    return scores


def accuracy_scores(predictions: list[int], references: list[int]) -> dict[str, float]:
    return {"accuracy": accuracy(predictions, references)}


class ClassificationTask(Task):
    """A classification head (mean-pooled linear by default) over the labels found in (or fixed
    for) the training rows."""

    name: ClassVar[str]
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(self, options: Any):
        super().__init__(options)
        self.label_names: tuple[str, ...] | None = None

    # provided by a modality mixin (see .modality)
    @abstractmethod
    def input_columns(self) -> list[str]: ...

    @abstractmethod
    def inputs(self, preprocessor: Any) -> Any: ...

    @abstractmethod
    def collator(self, inputs: Any, **labels: Any) -> Collator: ...

    def label_columns(self) -> list[str]:
        return [self.options.label_column]

    def labeler(self, train: datasets.Dataset) -> Labeler:
        return ColumnLabeler.for_rows(train, self.options.label_column)

    def fixed_labels(self) -> list[str] | None:
        return self.options.label_names

    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        inputs = self.inputs(preprocessor)
        transcript = self.options.transcript_column
        loss_columns = [] if transcript is None else [transcript]
        raw = load_splits(
            self.options, seed, [*self.input_columns(), *self.label_columns(), *loss_columns]
        )
        labels = LabelIndex.build(
            self.labeler(raw.train.rows), raw.train.rows, raw.train.origins, self.fixed_labels()
        )
        self.label_names = labels.names
        target = labels if transcript is None else WithTranscriptLength(labels, transcript)
        splits = encode_splits(self.options, raw, LabelledEncoder(inputs, target))
        return splits.task_data(
            self.collator(inputs, counts=(TRANSCRIPT_LENGTH,) if transcript else ()),
            HeadSpec(self.head_kind(), len(labels.names)),
            self.metadata(labels),
        )

    def head_kind(self) -> HeadKind:
        return "classification"

    def metadata(self, labels: LabelIndex) -> dict[str, Any]:
        """What the exported model keeps: the label of each output."""
        return {"label_names": list(labels.names)}

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        row_losses = F.cross_entropy(upcast(output.logits), batch["labels"], reduction="none")
        return normalised_loss(row_losses, batch, self.options.loss_normalisation)

    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return output.logits, None

    def metrics(self) -> MetricAccumulator:
        return PredictionAccumulator(self.scores())

    def scores(self) -> Scores:
        return partial(class_scores, len(self.built_labels()))

    def built_labels(self) -> tuple[str, ...]:
        if self.label_names is None:
            raise CaldError(
                f"{self.name}: build_data must run before metrics (it finds the labels)"
            )
        return self.label_names


#: the head kind of each ``head`` option of text classification
TEXT_HEADS: dict[str, HeadKind] = {
    "mean-linear": "classification",
    "first-token-tanh": "first_token_classification",
}


class TextClassificationTask(TextModality, ClassificationTask):
    name = "text-classification"
    options: TextClassificationOptions

    def head_kind(self) -> HeadKind:
        return TEXT_HEADS[self.options.head]


class AudioClassificationTask(AudioModality, ClassificationTask):
    name = "audio-classification"
    options: AudioClassificationOptions


class SpeakerIdTask(AudioClassificationTask):
    """Audio classification over speakers, scored by accuracy alone (F1 over hundreds of
    speakers with a handful of test rows each says little)."""

    name = "speaker-id"

    def scores(self) -> Scores:
        return accuracy_scores
