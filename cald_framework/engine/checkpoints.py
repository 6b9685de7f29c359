"""Training checkpoints: atomic directories of safetensors files plus one JSON state file.

A checkpoint is written into a temporary directory inside the checkpoints folder, every file
is fsynced, and the directory is renamed to ``step-XXXXXXXX`` only when complete, so a crash
leaves either the old set or the new one, plus a ``.tmp-*`` leftover that the next run removes.
Deletion goes the other way round (rename to ``.tmp-*``, then remove).

Each *part* (model, optimizer, guidance state) is a nested structure split by
:mod:`.treecodec` into ``<part>.safetensors`` and a skeleton in ``state.json``, which also
records the size and SHA-256 of every file so that a truncated or corrupted checkpoint is
recognised before anything is loaded from it.

A sharded run (FSDP) adds *shards*: every process writes its own piece of a part as
``<part>.rank-NNNNN.safetensors`` into the same temporary directory, the main process collects
their skeletons and checksums into ``state.json`` and renames the directory once all are
durable, so a sharded checkpoint is as atomic and verified as a whole one. A library that
writes its own format (DeepSpeed) writes into the same temporary directory on every process;
the main process then fsyncs every file it finds there and records it the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..atomic import fsync_dir
from ..errors import CheckpointError
from ..layout import parse_step, step_name
from . import treecodec
from .tensorfiles import read_tensors, sha256_of, write_tensors

FORMAT = 1
STATE_FILE = "state.json"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: its trainer state and lazily loaded parts."""

    path: Path
    step: int
    #: what the trainer stored besides tensors (positions, scheduler, RNG, best metric)
    meta: dict[str, Any]
    _skeletons: dict[str, Any]
    #: skeletons of each process's piece of a sharded part, by rank
    _shards: dict[str, list[Any]] = field(default_factory=dict)

    def has_part(self, name: str) -> bool:
        return name in self._skeletons

    def part(self, name: str, device: str | torch.device = "cpu") -> Any:
        """The nested structure saved as ``name``, its tensors on ``device``."""
        if name not in self._skeletons:
            raise CheckpointError(f"checkpoint {self.path} has no {name!r} state")
        tensors = read_tensors(self.path / f"{name}.safetensors", device)
        return treecodec.decode(self._skeletons[name], tensors)

    @property
    def shard_count(self) -> int | None:
        """How many processes wrote pieces of the sharded parts (``None``: nothing is sharded)."""
        counts = {len(pieces) for pieces in self._shards.values()}
        return counts.pop() if counts else None

    def shard(self, name: str, rank: int, device: str | torch.device = "cpu") -> Any:
        """Process ``rank``'s piece of the sharded part ``name``."""
        if name not in self._shards:
            raise CheckpointError(f"checkpoint {self.path} has no sharded {name!r} state")
        tensors = read_tensors(self.path / _shard_file(name, rank), device)
        return treecodec.decode(self._shards[name][rank], tensors)


@dataclass(frozen=True)
class ShardGroup:
    """The processes that write one sharded checkpoint together, and how they talk."""

    rank: int
    world: int
    #: the main process's value, on every process
    share: Callable[[Any], Any]
    #: every process's value, on every process, in rank order
    collect: Callable[[Any], list[Any]]


def _shard_file(name: str, rank: int) -> str:
    return f"{name}.rank-{rank:05d}.safetensors"


def save_checkpoint(
    root: Path, step: int, parts: Mapping[str, Any], meta: Mapping[str, Any]
) -> Path:
    """Write ``parts`` and ``meta`` as the checkpoint of ``step``; replaces an older one of that step.

    A write that fails (a full disk) raises :class:`CheckpointError` and leaves the other
    checkpoints as they were.
    """
    final = root / step_name(step)
    staging: Path | None = None
    try:
        staging = _staging(root)
        _write(staging, final, step, parts, meta)
    except OSError as error:
        raise _abandoned(final, staging, error) from error
    return final


def _staging(root: Path) -> Path:
    """A new temporary directory in ``root`` for a checkpoint being written."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=root))


def _abandoned(final: Path, staging: Path | None, error: OSError) -> CheckpointError:
    """Remove what a failed write of ``final`` left in ``staging``; the error to raise."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    return CheckpointError(f"cannot write checkpoint {final}: {error}; the earlier checkpoints are untouched")


def _write_parts(staging: Path, parts: Mapping[str, Any], name_of: Callable[[str], str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write each part's tensors into ``staging``; their skeletons and file records."""
    skeletons: dict[str, Any] = {}
    files: dict[str, dict[str, Any]] = {}
    for name, tree in parts.items():
        skeletons[name], tensors = treecodec.encode(tree)
        file = staging / name_of(name)
        write_tensors(file, tensors)
        files[file.name] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
    return skeletons, files


def _record_foreign(staging: Path, recorded: Collection[str]) -> dict[str, Any]:
    """Make durable and record every file under ``staging`` not in ``recorded`` (by path
    relative to ``staging``): the files a library wrote in its own format."""
    files: dict[str, Any] = {}
    for file in sorted(staging.rglob("*")):
        name = file.relative_to(staging).as_posix()
        if file.is_dir():
            fsync_dir(file)
        elif name not in recorded:
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            files[name] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
    return files


def _write(
    staging: Path,
    final: Path,
    step: int,
    parts: Mapping[str, Any],
    meta: Mapping[str, Any],
    shards: Mapping[str, list[Any]] | None = None,
    shard_files: Mapping[str, Any] | None = None,
) -> None:
    """Fill ``staging`` and rename it to ``final`` once every file is durable."""
    skeletons, files = _write_parts(staging, parts, lambda name: f"{name}.safetensors")
    state = {"format": FORMAT, "step": step, "files": {**files, **(shard_files or {})}, "parts": skeletons}
    if shards:
        state["shards"] = dict(shards)
    state["meta"] = dict(meta)
    state_file = staging / STATE_FILE
    with open(state_file, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(staging)
    if final.exists():
        _remove(final)
    os.replace(staging, final)
    fsync_dir(final.parent)


def save_sharded_checkpoint(
    root: Path,
    step: int,
    parts: Mapping[str, Any],
    meta: Mapping[str, Any],
    pieces: Mapping[str, Any],
    group: ShardGroup,
    *,
    foreign: Callable[[Path], None] | None = None,
) -> Path:
    """Like :func:`save_checkpoint`, with this process's ``pieces`` of the sharded parts, and
    the files ``foreign`` writes into the temporary directory (every process calls it).

    Every process of ``group`` calls it; ``parts`` and ``meta`` count on the main process only.
    A write that fails on any process raises :class:`CheckpointError` on the main process and
    leaves the other checkpoints as they were.
    """
    final = root / step_name(step)
    main = group.rank == 0
    staging: Path | None = None
    failure: OSError | None = None
    if main:
        try:
            staging = _staging(root)
        except OSError as error:
            failure = error
    shared = group.share(None if staging is None else str(staging))
    written: Any = None
    if shared is not None:
        try:
            written = _write_parts(Path(shared), pieces, lambda name: _shard_file(name, group.rank))
            if foreign is not None:
                foreign(Path(shared))
        except OSError as error:
            written = str(error)
    results = group.collect(written)
    if not main:
        return final
    problems = [result for result in results if not isinstance(result, tuple)]
    try:
        if failure is not None:
            raise failure
        if problems:
            raise OSError(problems[0] or "a process could not write its shard")
        shards = {name: [result[0][name] for result in results] for name in pieces}
        shard_files = {file: record for result in results for file, record in result[1].items()}
        shard_files.update(_record_foreign(staging, shard_files))
        _write(staging, final, step, parts, meta, shards, shard_files)
    except OSError as error:
        raise _abandoned(final, staging, error) from error
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint so that a crash half-way leaves a temporary, never a partial checkpoint."""
    doomed = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=path.parent))
    os.replace(path, doomed / path.name)
    shutil.rmtree(doomed)


def remove_temporaries(root: Path) -> None:
    """Delete what an interrupted save or delete left behind."""
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(_TEMP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories in ``root``, oldest first (temporaries and other files ignored)."""
    if not root.is_dir():
        return []
    found = [(step, entry) for entry in root.iterdir() if (step := parse_step(entry.name)) is not None]
    return [path for _, path in sorted(found)]


def _check_file(path: Path, expected: Mapping[str, Any]) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(f"{path.name} is truncated ({size} of {expected['bytes']} bytes)")
    if sha256_of(path) != expected["sha256"]:
        raise CheckpointError(f"{path.name} does not match its checksum")
    if path.suffix != ".safetensors":
        return  # a library's own format: the checksum is all there is to check
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own error type for bad headers
        raise CheckpointError(f"{path.name} has an unreadable header ({error})") from error


def open_checkpoint(path: Path) -> Checkpoint:
    """Read and verify a checkpoint; :class:`CheckpointError` names it and what is wrong."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("format") != FORMAT:
            raise CheckpointError(f"unknown checkpoint format {state.get('format')!r}")
        for name, expected in state["files"].items():
            _check_file(path / name, expected)
        return Checkpoint(path, int(state["step"]), state["meta"], state["parts"], state.get("shards", {}))
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path} is unusable: {error}") from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = "state.json is missing" if isinstance(error, FileNotFoundError) else (
            f"state.json is unreadable ({type(error).__name__}: {error})"
        )
        raise CheckpointError(f"checkpoint {path} is unusable: {reason}") from error


def latest_checkpoint(root: Path, warn: Callable[[str], None]) -> Checkpoint | None:
    """The newest checkpoint that verifies; each broken newer one is reported through ``warn``.

    ``None`` when there is none at all; :class:`CheckpointError` when every one is broken.
    """
    candidates = list_checkpoints(root)
    for path in reversed(candidates):
        try:
            return open_checkpoint(path)
        except CheckpointError as error:
            warn(f"{error}; falling back to the previous checkpoint")
    if candidates:
        raise CheckpointError(f"no usable checkpoint in {root}: all {len(candidates)} are broken")
    return None


def prune(root: Path, keep_last: int, keep: Collection[Path] = ()) -> None:
    """Delete every checkpoint except the newest ``keep_last`` and those in ``keep``."""
    existing = list_checkpoints(root)
    survivors = set(existing[-keep_last:]) | set(keep)
    for path in existing:
        if path not in survivors:
            _remove(path)
