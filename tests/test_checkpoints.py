"""Checkpoint files: exact round trips without pickle, atomicity, verification and fallback."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cald_framework.engine import treecodec
from cald_framework.engine.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    open_checkpoint,
    prune,
    remove_temporaries,
    save_checkpoint,
)
from cald_framework.engine.rng import capture_rng, restore_rng
from cald_framework.engine.tensorfiles import read_tensors, write_tensors
from cald_framework.errors import CheckpointError


def _trained_adamw() -> tuple[nn.Module, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.8, 0.95),
    )
    for _ in range(2):
        model(torch.randn(5, 3)).sum().backward()
        optimizer.step()
    return model, optimizer


def test_optimizer_state_round_trips_exactly(tmp_path: Path) -> None:
    model, optimizer = _trained_adamw()
    state = optimizer.state_dict()
    save_checkpoint(tmp_path, 2, {"optimizer": state}, {"note": "x"})
    loaded = open_checkpoint(tmp_path / "step-00000002").part("optimizer")
    assert loaded["param_groups"] == state["param_groups"]  # tuples (betas) and ints survive
    assert set(loaded["state"]) == {0, 1, 2, 3}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            assert torch.equal(loaded["state"][index][key], value)
    fresh = torch.optim.AdamW(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "weight_decay": 0.0}]
    )
    fresh.load_state_dict(loaded)
    assert len(fresh.state) == 4  # string keys would have been dropped silently


def test_tree_codec_rejects_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot store a set at a/0"):
        treecodec.encode({"a": [{1}]})


def test_tied_tensors_stay_tied_and_complete(tmp_path: Path) -> None:
    embedding = torch.randn(4, 3)
    tensors = {"embed.weight": embedding, "head.weight": embedding, "half": embedding[:2]}
    write_tensors(tmp_path / "t.safetensors", tensors)
    loaded = read_tensors(tmp_path / "t.safetensors")
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


def test_rng_state_round_trips_through_json() -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = json.loads(json.dumps(capture_rng()))
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(state)
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def _save_three(root: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(root, step, {"model": {"w": torch.full((3,), float(step))}}, {"step": step})


def test_leftover_temporaries_are_ignored_and_cleaned(tmp_path: Path) -> None:
    _save_three(tmp_path)
    crashed = tmp_path / ".tmp-abc123"
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"half written")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002", "step-00000003"]
    remove_temporaries(tmp_path)
    assert not crashed.exists()


def test_truncated_safetensors_falls_back_to_previous(tmp_path: Path) -> None:
    _save_three(tmp_path)
    newest = tmp_path / "step-00000003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-7])
    warnings: list[str] = []
    checkpoint = latest_checkpoint(tmp_path, warnings.append)
    assert checkpoint is not None and checkpoint.step == 2
    assert torch.equal(checkpoint.part("model")["w"], torch.full((3,), 2.0))
    assert warnings == [
        f"checkpoint {tmp_path / 'step-00000003'} is unusable: model.safetensors is truncated "
        f"({newest.stat().st_size} of {newest.stat().st_size + 7} bytes); falling back to the "
        "previous checkpoint"
    ]


def test_corrupted_bytes_and_state_are_named(tmp_path: Path) -> None:
    _save_three(tmp_path)
    model = tmp_path / "step-00000003" / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step-00000003 is unusable: model.safetensors does not match its checksum"):
        open_checkpoint(tmp_path / "step-00000003")
    (tmp_path / "step-00000002" / "state.json").write_text('{"format": 1, "st')
    with pytest.raises(CheckpointError, match=r"step-00000002 is unusable: state.json is unreadable \(JSONDecodeError"):
        open_checkpoint(tmp_path / "step-00000002")
    (tmp_path / "step-00000001" / "state.json").unlink()
    with pytest.raises(CheckpointError, match=f"no usable checkpoint in {tmp_path}: all 3 are broken"):
        latest_checkpoint(tmp_path, lambda message: None)


def test_no_checkpoint_means_fresh_start(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "absent", lambda message: None) is None


def test_prune_keeps_last_and_best(tmp_path: Path) -> None:
    _save_three(tmp_path)
    save_checkpoint(tmp_path, 4, {"model": {"w": torch.zeros(1)}}, {})
    prune(tmp_path, keep_last=2, keep={tmp_path / "step-00000001"})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000003", "step-00000004"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    _save_three(tmp_path)
    save_checkpoint(tmp_path, 3, {"model": {"w": torch.ones(2)}}, {"again": True})
    checkpoint = open_checkpoint(tmp_path / "step-00000003")
    assert checkpoint.meta == {"again": True}
    assert torch.equal(checkpoint.part("model")["w"], torch.ones(2))
