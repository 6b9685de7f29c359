"""Sharded checkpoints: every process's pieces in one verified directory, or nothing at all.

Two threads stand in for two processes (the group's share and collect meet at a barrier), so
the writing protocol runs as under ``torchrun`` without starting any.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.engine.checkpoints import (
    ShardGroup,
    list_checkpoints,
    open_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from cald_framework.errors import CheckpointError

WORLD = 2


class _Meeting:
    """Collectives of ``WORLD`` threads: what rank 0 shares, and every rank's value in order."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(WORLD)
        self.slots: list[Any] = [None] * WORLD

    def group(self, rank: int) -> ShardGroup:
        def collect(value: Any) -> list[Any]:
            self.slots[rank] = value
            self.barrier.wait()
            values = list(self.slots)
            self.barrier.wait()
            return values

        return ShardGroup(rank, WORLD, lambda value: collect(value)[0], collect)


def _pieces(rank: int) -> dict[str, Any]:
    return {"model": {"weight": torch.full((3,), float(rank))}, "optimizer": {"step": torch.tensor(rank + 7)}}


def _save_from_every_rank(root: Path, foreign: Callable[[int], Callable[[Path], None]] | None = None) -> None:
    """Every rank saves its pieces, and what ``foreign(rank)`` writes into the scratch directory."""
    meeting = _Meeting()
    threads = [
        threading.Thread(
            target=save_sharded_checkpoint,
            args=(root, 4, {"guidance": {"seen": torch.ones(2)}}, {"note": "kept"}, _pieces(rank), meeting.group(rank)),
            kwargs={"foreign": foreign(rank) if foreign else None},
        )
        for rank in range(WORLD)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_every_process_piece_round_trips(tmp_path: Path) -> None:
    _save_from_every_rank(tmp_path)
    checkpoint = open_checkpoint(tmp_path / "step-00000004")
    assert checkpoint.shard_count == WORLD and checkpoint.meta == {"note": "kept"}
    torch.testing.assert_close(checkpoint.part("guidance")["seen"], torch.ones(2), rtol=0, atol=0)
    for rank in range(WORLD):
        piece = checkpoint.shard("model", rank)
        assert torch.equal(piece["weight"], _pieces(rank)["model"]["weight"])
        assert checkpoint.shard("optimizer", rank)["step"].item() == rank + 7


def test_a_truncated_piece_is_recognised(tmp_path: Path) -> None:
    _save_from_every_rank(tmp_path)
    piece = tmp_path / "step-00000004" / "model.rank-00001.safetensors"
    piece.write_bytes(piece.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match=r"step-00000004 is unusable: model.rank-00001.safetensors is truncated"):
        open_checkpoint(tmp_path / "step-00000004")


def test_a_process_that_cannot_write_leaves_the_earlier_checkpoints(tmp_path: Path) -> None:
    earlier = save_checkpoint(tmp_path, 3, {"guidance": {"seen": torch.ones(2)}}, {})
    disk_full = ShardGroup(0, WORLD, share=lambda value: value, collect=lambda own: [own, "No space left on device"])
    with pytest.raises(CheckpointError) as failed:
        save_sharded_checkpoint(tmp_path, 4, {}, {}, _pieces(0), disk_full)
    assert str(failed.value) == (
        f"cannot write checkpoint {tmp_path / 'step-00000004'}: No space left on device; "
        "the earlier checkpoints are untouched"
    )
    assert list_checkpoints(tmp_path) == [earlier]
    assert [entry.name for entry in tmp_path.iterdir()] == [earlier.name]


def _library_files(rank: int) -> Callable[[Path], None]:
    """What a library with a format of its own (DeepSpeed) writes on process ``rank``."""

    def write(staging: Path) -> None:
        (staging / "engine").mkdir(exist_ok=True)
        (staging / "engine" / f"rank-{rank}.pt").write_bytes(bytes([rank]) * 64)

    return write


def test_files_a_library_writes_are_recorded_and_verified(tmp_path: Path) -> None:
    _save_from_every_rank(tmp_path, _library_files)
    path = tmp_path / "step-00000004"
    assert open_checkpoint(path).shard_count == WORLD
    files = json.loads((path / "state.json").read_text())["files"]
    assert files["engine/rank-1.pt"] == {"bytes": 64, "sha256": hashlib.sha256(bytes([1]) * 64).hexdigest()}
    (path / "engine" / "rank-1.pt").write_bytes(bytes([2]) * 64)
    with pytest.raises(CheckpointError, match=r"step-00000004 is unusable: rank-1.pt does not match its checksum"):
        open_checkpoint(path)
