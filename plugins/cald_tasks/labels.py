"""Class labels: reading them from rows, fixing their order, and mapping them to ids."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import datasets

from cald_framework.errors import DataError

from .loading import Origin
from .rows import RowProblem

_SHOWN = 10


class Labeler(Protocol):
    """Reads the label of a row as text."""

    #: what the label is called in messages
    description: str

    def __call__(self, row: dict[str, Any]) -> str:
        """The row's label, or :class:`RowProblem` when it has none."""
        ...

    def discover(self, rows: datasets.Dataset) -> list[str]:
        """The labels of ``rows`` in their defined order, or sorted when none is defined."""
        ...


def label_text(value: Any, names: Sequence[str] | None = None) -> str | None:
    """A label value as text; ``None`` when missing (None, NaN, blank, or -1 of a ClassLabel).

    CSV readers turn an integer column with a gap into floats, so integral floats become ints.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if names is not None:
        return names[value] if 0 <= value < len(names) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Sorted, numerically when every label is an integer (so "10" follows "9")."""
    labels = set(labels)
    if all(_is_int(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


@dataclass(frozen=True)
class ColumnLabeler:
    """The label is one column (a ``ClassLabel`` column's ids are read as its names)."""

    column: str
    class_names: tuple[str, ...] | None = None

    @classmethod
    def for_rows(cls, rows: datasets.Dataset, column: str) -> ColumnLabeler:
        feature = rows.features.get(column)
        names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        return cls(column, names)

    @property
    def description(self) -> str:
        return f"label in column {self.column!r}"

    def __call__(self, row: dict[str, Any]) -> str:
        text = label_text(row[self.column], self.class_names)
        if text is None:
            raise RowProblem(f"missing {self.description}")
        return text

    def discover(self, rows: datasets.Dataset) -> list[str]:
        if self.class_names is not None:
            return list(self.class_names)
        found = (label_text(value) for value in rows.unique(self.column))
        return sorted_labels(label for label in found if label is not None)


@dataclass(frozen=True)
class LabelIndex:
    """Label names in id order; as a row target, each row's class id."""

    names: tuple[str, ...]
    labeler: Labeler
    ids: dict[str, int] = field(init=False)
    columns: ClassVar[tuple[str, ...]] = ("labels",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", {name: index for index, name in enumerate(self.names)})

    @classmethod
    def build(
        cls,
        labeler: Labeler,
        train: datasets.Dataset,
        origins: Sequence[Origin],
        fixed: Sequence[str] | None,
    ) -> LabelIndex:
        """The fixed order when given, else the labels found in the training rows."""
        names = tuple(fixed) if fixed is not None else tuple(labeler.discover(train))
        if len(names) < 2:
            where = ", ".join(origin.name for origin in origins)
            raise DataError(
                f"{where}: the training rows have {len(names)} distinct "
                f"{labeler.description} ({', '.join(names) or 'none'}); a classifier needs two"
            )
        return cls(names, labeler)

    def prepare(self, row: dict[str, Any]) -> int:
        label = self.labeler(row)
        try:
            return self.ids[label]
        except KeyError:
            known = ", ".join(self.names[:_SHOWN]) + (", ..." if len(self.names) > _SHOWN else "")
            raise RowProblem(
                f"unknown {self.labeler.description}: {label!r} (known: {known})"
            ) from None

    def encode(self, ids: list[int]) -> dict[str, list[int]]:
        return {"labels": ids}
