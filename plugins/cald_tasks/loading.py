"""Loading raw rows with the ``datasets`` library, each row tagged with where it came from.

Every row carries ``_origin`` (an index into :attr:`RawSplit.origins`) and ``_row`` (its 1-based
position in that origin), so a bad row can be reported by file and row even after files are
concatenated, a validation split is carved out and rows are subsampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from cald_framework.errors import DataError

from .options import LOCAL_READERS, DataOptions

_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}


@dataclass(frozen=True)
class Origin:
    """A file, directory or hub split that rows came from."""

    name: str
    #: where relative audio paths in its rows start from (``None`` for hub data)
    base_dir: Path | None


@dataclass(frozen=True)
class RawSplit:
    """Raw rows of one split, and the origins their ``_origin`` column points into."""

    rows: datasets.Dataset
    origins: tuple[Origin, ...]

    def where(self, column: str, value: str) -> RawSplit:
        """The rows whose ``column`` holds ``value`` (as text)."""
        rows = self.rows.filter(
            _equals,
            input_columns=[column],
            batched=True,
            fn_kwargs={"value": value},
            desc=f"Selecting {column} = {value}",
        )
        if len(rows) == 0:
            found = ", ".join(sorted(str(v) for v in self.rows.unique(column)))
            names = ", ".join(origin.name for origin in self.origins)
            raise DataError(f"{names}: no rows with {column} = {value!r}; it has: {found}")
        return RawSplit(rows, self.origins)

    def head(self, limit: int | None) -> RawSplit:
        """The first ``limit`` rows (all of them when ``limit`` is ``None``)."""
        if limit is None or limit >= len(self.rows):
            return self
        return RawSplit(self.rows.select(range(limit)), self.origins)


@dataclass(frozen=True)
class RawSplits:
    """The training rows and the evaluation rows (``None`` when the data has none to load)."""

    train: RawSplit
    eval: RawSplit | None


def load_splits(options: DataOptions, seed: int, columns: Sequence[str]) -> RawSplits:
    """The training and evaluation rows of the spec, checked to have ``columns``."""
    train, evaluation = _named_splits(options, columns)
    if options.eval_from_train is not None:
        parts = train.rows.train_test_split(test_size=options.eval_from_train, seed=seed)
        return RawSplits(
            RawSplit(parts["train"], train.origins), RawSplit(parts["test"], train.origins)
        )
    return RawSplits(train, evaluation)


def _named_splits(options: DataOptions, columns: Sequence[str]) -> tuple[RawSplit, RawSplit | None]:
    """The ``train_split`` rows and, unless there is none, the ``evaluation_split`` rows."""
    names = [options.train_split, *filter(None, [options.evaluation_split])]
    if options.split_column is None:
        splits = [_load_split(options, name, columns) for name in names]
    else:
        table = _load_split(options, "train", [*columns, options.split_column])
        splits = [table.where(options.split_column, name) for name in names]
    return splits[0], splits[1] if len(splits) > 1 else None


def _load_split(options: DataOptions, split: str, columns: Sequence[str]) -> RawSplit:
    if options.dataset in LOCAL_READERS:
        loaded = _load_local(options, split)
    else:
        loaded = _load_hub(options, split)
    raw = RawSplit(_undecoded_audio(loaded.rows), loaded.origins)
    missing = [c for c in columns if c not in raw.rows.column_names]
    if missing:
        names = ", ".join(origin.name for origin in raw.origins)
        have = ", ".join(c for c in raw.rows.column_names if not c.startswith("_"))
        raise DataError(f"{names}: no column {missing[0]!r}; the columns are: {have}")
    return raw


def _load_hub(options: DataOptions, split: str) -> RawSplit:
    origin = Origin(f"{options.dataset} split {split!r}", None)
    try:
        rows = datasets.load_dataset(
            options.dataset,
            options.dataset_config,
            split=split,
            data_files=options.data_files,
            cache_dir=options.cache_dir,
        )
    except Exception as error:  # datasets raises many kinds; the user needs the reason in one line
        raise DataError(f"cannot load {origin.name}: {error}") from None
    return RawSplit(_tag(rows, 0), (origin,))


def _load_local(options: DataOptions, split: str) -> RawSplit:
    files_by_split = options.files_by_split() or {}
    if split not in files_by_split:
        raise DataError(
            f"data_files has no split {split!r}; it has: {', '.join(files_by_split)} "
            "(set eval_split = the split to use, or eval_from_train)"
        )
    files = files_by_split[split]
    read = _list_audio_folder if options.dataset == "audiofolder" else _read_file
    parts = [_tag(read(options, Path(f)), index) for index, f in enumerate(files)]
    origins = tuple(
        Origin(f, Path(f) if options.dataset == "audiofolder" else Path(f).parent) for f in files
    )
    return RawSplit(datasets.concatenate_datasets(parts), origins)


def _read_file(options: DataOptions, path: Path) -> datasets.Dataset:
    if not path.is_file():
        raise DataError(f"{path}: not a file (dataset = {options.dataset!r} reads files)")
    try:
        return datasets.load_dataset(
            options.dataset, data_files=str(path), split="train", cache_dir=options.cache_dir
        )
    except Exception as error:  # the reader's own message says what is wrong with the file
        raise DataError(f"{path}: cannot read as {options.dataset}: {error}") from None


def _list_audio_folder(options: DataOptions, folder: Path) -> datasets.Dataset:
    """Rows ``{"audio": path, "label": name of the directory that holds the file}``, sorted."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory (dataset = 'audiofolder' reads directories)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no audio files ({', '.join(sorted(_AUDIO_SUFFIXES))})")
    return datasets.Dataset.from_dict(
        {
            "audio": [str(p.relative_to(folder)) for p in files],
            "label": [p.parent.name if p.parent != folder else None for p in files],
            # part of the fingerprint, so re-recorded files are not served from the cache
            "_modified": [p.stat().st_mtime_ns for p in files],
        }
    )


def _tag(rows: datasets.Dataset, origin: int) -> datasets.Dataset:
    return rows.map(
        _where_from,
        with_indices=True,
        batched=True,
        fn_kwargs={"origin": origin},
        desc="Tagging rows",
    )


def _where_from(
    batch: dict[str, list[Any]], indices: list[int], origin: int
) -> dict[str, list[int]]:
    return {"_origin": [origin] * len(indices), "_row": [i + 1 for i in indices]}


def _equals(cells: list[Any], value: str) -> list[bool]:
    return [str(cell) == value for cell in cells]


def _undecoded_audio(rows: datasets.Dataset) -> datasets.Dataset:
    """Audio columns as ``{"path", "bytes"}``: decoding is ours (``datasets`` needs torchcodec)."""
    for name, feature in rows.features.items():
        if isinstance(feature, datasets.Audio) and feature.decode:
            rows = rows.cast_column(name, datasets.Audio(decode=False))
    return rows
