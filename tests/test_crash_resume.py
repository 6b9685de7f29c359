"""``run`` and ``run --resume`` when the disk fills up or a checkpoint is damaged.

Each case stops a real run part-way, by making a checkpoint write fail, and resumes it; the
result must equal a run that was never interrupted, bit for bit. ``scripts/crash_resume.py``
(``make reliability``) does the same with real SIGKILLs.
"""

from __future__ import annotations

import errno
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import build_review_workspace
from safetensors import SafetensorError

from cald_framework import cli
from cald_framework.engine import tensorfiles
from cald_framework.engine.checkpoints import list_checkpoints, open_checkpoint, save_checkpoint
from cald_framework.errors import CheckpointError

#: a quick spec: no teacher fine-tuning, six steps, a checkpoint after each, the last two kept
QUICK = {
    "guidance.mode": "unguided",
    "student.init": "source",
    "training.epochs": 1,
    "training.keep_last": 2,
}
#: every checkpoint of the quick spec writes two files, the model's then the optimizer's
FILES_PER_CHECKPOINT = 2
CHECKPOINTS = Path("run") / "checkpoints"
STUDENT = Path("run") / "student" / "model.safetensors"
NO_SPACE = "[Errno 28] No space left on device"


def _run(workspace: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(workspace)
    return cli.main(["run", "spec.toml", *extra])


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _disk_full_at(checkpoint: int, error: Exception) -> Callable[..., None]:
    """A safetensors writer that writes part of a file and fails in ``checkpoint``'s model file."""
    real = tensorfiles.save_file
    calls = itertools.count(1)
    failing = (checkpoint - 1) * FILES_PER_CHECKPOINT + 1

    def save(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        if next(calls) == failing:
            Path(filename).write_bytes(b"\0" * 100)
            raise error
        real(tensors, filename, metadata=metadata)

    return save


def _stop_at(workspace: Path, checkpoint: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run until writing ``checkpoint`` fails as on a full disk; returns the exit code."""
    full = OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patch:
        patch.setattr(tensorfiles, "save_file", _disk_full_at(checkpoint, full))
        return _run(workspace, monkeypatch)


def _assert_same_student(a: Path, b: Path) -> None:
    left, right = tensorfiles.read_tensors(a), tensorfiles.read_tensors(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student of the uninterrupted run."""
    workspace = tmp_path_factory.mktemp("straight")
    build_review_workspace(workspace, QUICK)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _run(workspace, monkeypatch) == 0
    return workspace / STUDENT


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    build_review_workspace(tmp_path, QUICK)
    return tmp_path


def test_a_full_disk_stops_the_run_clearly_and_keeps_the_last_checkpoint(
    workspace: Path, straight: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _stop_at(workspace, 3, monkeypatch) == cli.USER_ERROR
    assert _errors(capsys) == [
        f"error: cannot write checkpoint {CHECKPOINTS / 'step-00000003'}: {NO_SPACE}; "
        "the earlier checkpoints are untouched"
    ]
    checkpoints = workspace / CHECKPOINTS
    assert [path.name for path in list_checkpoints(checkpoints)] == ["step-00000001", "step-00000002"]
    assert open_checkpoint(checkpoints / "step-00000002").step == 2
    assert not list(checkpoints.glob(".tmp-*"))  # the half-written files went with their folder

    assert _run(workspace, monkeypatch, "--resume") == 0  # once there is space again
    _assert_same_student(workspace / STUDENT, straight)


def test_the_safetensors_writer_reports_a_full_disk_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its I/O errors are not ``OSError``: they must still stop the save cleanly."""
    error = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(tensorfiles, "save_file", _disk_full_at(1, error))
    with pytest.raises(CheckpointError) as refused:
        save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(3)}}, {})
    assert str(refused.value) == (
        f"cannot write checkpoint {tmp_path / 'step-00000001'}: {NO_SPACE}; the earlier checkpoints are untouched"
    )
    assert list(tmp_path.iterdir()) == []


def test_resume_falls_back_past_a_truncated_checkpoint(
    workspace: Path, straight: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _stop_at(workspace, 4, monkeypatch) == cli.USER_ERROR
    newest = workspace / CHECKPOINTS / "step-00000003" / "model.safetensors"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:100])

    assert _run(workspace, monkeypatch, "--resume") == 0
    _assert_same_student(workspace / STUDENT, straight)
    events = [json.loads(line) for line in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    warnings = [event["message"] for event in events if event["event"] == "warning"]
    assert warnings == [
        f"checkpoint {CHECKPOINTS / 'step-00000003'} is unusable: model.safetensors is truncated "
        f"(100 of {size} bytes); falling back to the previous checkpoint"
    ]


def test_resume_refuses_when_every_checkpoint_is_damaged(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _stop_at(workspace, 4, monkeypatch) == cli.USER_ERROR
    for checkpoint in list_checkpoints(workspace / CHECKPOINTS):
        state = checkpoint / "optimizer.safetensors"
        data = bytearray(state.read_bytes())
        data[-1] ^= 0xFF
        state.write_bytes(bytes(data))
    capsys.readouterr()

    assert _run(workspace, monkeypatch, "--resume") == cli.USER_ERROR
    assert _errors(capsys) == [f"error: no usable checkpoint in {CHECKPOINTS}: all 2 are broken"]
