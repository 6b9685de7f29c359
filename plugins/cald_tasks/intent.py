"""SLURP-style intent classification: the model predicts the joint scenario-action label.

The headline metric is joint intent accuracy (scenario and action both right). Scenario and
action accuracy are derived from the predicted joint label and reported beside it; the paper's
code reported the mean of those two instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import datasets

from .classification import ClassificationTask, Scores
from .labels import Labeler, LabelIndex, label_text, sorted_labels
from .metrics import accuracy
from .modality import AudioModality
from .options import IntentOptions
from .rows import RowProblem


@dataclass(frozen=True)
class IntentLabeler:
    """Joint label ``scenario<separator>action`` from one intent column or two columns."""

    columns: tuple[str, ...]
    separator: str

    @property
    def description(self) -> str:
        names = " and ".join(repr(column) for column in self.columns)
        return f"intent in column{'s' if len(self.columns) > 1 else ''} {names}"

    def __call__(self, row: dict[str, Any]) -> str:
        parts = [label_text(row[column]) for column in self.columns]
        if None in parts:
            raise RowProblem(f"missing {self.description}")
        intent = self.separator.join(parts)
        scenario, found, _ = intent.partition(self.separator)
        if not found or len(parts) > 1 and scenario != parts[0]:
            raise RowProblem(
                f"intent {intent!r} does not split at its first {self.separator!r} into "
                "scenario and action"
            )
        return intent

    def discover(self, rows: datasets.Dataset) -> list[str]:
        found = set()
        for row in rows.select_columns(list(self.columns)):
            try:
                found.add(self(row))
            except RowProblem:
                continue
        return sorted_labels(found)


def intent_scores(
    names: tuple[str, ...], separator: str, predictions: list[int], references: list[int]
) -> dict[str, float]:
    """Joint, scenario and action accuracy from joint label ids."""
    split = [name.split(separator, 1) for name in names]
    predicted = [split[i] for i in predictions]
    actual = [split[i] for i in references]
    return {
        "intent_accuracy": accuracy(predictions, references),
        "scenario_accuracy": accuracy([p[0] for p in predicted], [a[0] for a in actual]),
        "action_accuracy": accuracy([p[1] for p in predicted], [a[1] for a in actual]),
    }


class IntentClassificationTask(AudioModality, ClassificationTask):
    name = "intent-classification"
    primary_metric: ClassVar[str] = "intent_accuracy"
    options: IntentOptions

    def label_columns(self) -> list[str]:
        if self.options.intent_column is not None:
            return [self.options.intent_column]
        return [self.options.scenario_column, self.options.action_column]

    def labeler(self, train: datasets.Dataset) -> Labeler:
        return IntentLabeler(tuple(self.label_columns()), self.options.intent_separator)

    def fixed_labels(self) -> list[str] | None:
        return None

    def metadata(self, labels: LabelIndex) -> dict[str, Any]:
        return {**super().metadata(labels), "intent_separator": self.options.intent_separator}

    def scores(self) -> Scores:
        return partial(intent_scores, self.built_labels(), self.options.intent_separator)
