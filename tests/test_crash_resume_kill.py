"""``python -m cald_framework run`` killed with SIGKILL once a checkpoint exists, then resumed.

The killed process gets no chance to clean up or flush anything; ``run --resume`` must continue
from its newest checkpoint and end with the student of a run that was never interrupted, bit
for bit. (``scripts/crash_resume.py``, run by ``make reliability``, does this many times over,
also killing mid-write; this is the short case the test suite always runs.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cald_framework import cli
from cald_framework.engine.checkpoints import list_checkpoints
from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.layout import CHECKPOINTS_DIR, RESULTS_FILE, STUDENT_DIR, parse_step
from cald_testing.workspaces import build_review_workspace

#: no teacher fine-tuning; 12 steps (48 rows, batch 8, 2 epochs), a checkpoint after each
QUICK = {"guidance.mode": "unguided", "student.init": "source", "training.epochs": 2}
STEPS = 12
WEIGHTS = Path(STUDENT_DIR) / "model.safetensors"
#: how long the killed run may take to write its first checkpoint (start-up included)
PATIENCE_SECONDS = 180.0


def _command(output: str, *extra: str) -> list[str]:
    return ["run", "spec.toml", "--set", f"experiment.output_dir={output}", *extra]


def _start(workspace: Path, output: str) -> subprocess.Popen[bytes]:
    """``python -m cald_framework run`` in a new process, its errors in ``<output>.log``."""
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # the thread count of this process, which makes the runs it is compared with
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    with (workspace / f"{output}.log").open("wb") as log:  # a file: a pipe nobody reads can fill up
        return subprocess.Popen(
            [sys.executable, "-m", "cald_framework", *_command(output)],
            cwd=workspace, env=environment, stdout=subprocess.DEVNULL, stderr=log,
        )


def _kill_at_first_checkpoint(process: subprocess.Popen[bytes], checkpoints: Path) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not list_checkpoints(checkpoints) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)  # nothing when it has already ended


def test_a_killed_run_resumes_to_the_uninterrupted_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build_review_workspace(tmp_path, QUICK)
    monkeypatch.chdir(tmp_path)
    process = _start(tmp_path, "killed")
    checkpoints = tmp_path / "killed" / CHECKPOINTS_DIR
    killer = threading.Thread(target=_kill_at_first_checkpoint, args=(process, checkpoints))
    killer.start()
    try:
        assert cli.main(_command("straight")) == 0  # the uninterrupted run, meanwhile
    finally:
        killer.join()
        process.kill()
        process.wait()
    log = (tmp_path / "killed.log").read_text()
    assert process.returncode == -signal.SIGKILL, f"the run ended by itself:\n{log[-2000:]}"
    assert list_checkpoints(checkpoints), f"no checkpoint after {PATIENCE_SECONDS:.0f} s"
    assert not (tmp_path / "killed" / RESULTS_FILE).exists()
    killed_at = parse_step(list_checkpoints(checkpoints)[-1].name)
    assert killed_at is not None and killed_at < STEPS

    capsys.readouterr()
    assert cli.main(_command("killed", "--resume")) == 0
    trained = [int(step) for step in re.findall(r"^\[train step (\d+)/", capsys.readouterr().err, re.M)]
    assert trained == list(range(killed_at + 1, STEPS + 1))  # it went on from the checkpoint

    resumed, straight = read_tensors(tmp_path / "killed" / WEIGHTS), read_tensors(tmp_path / "straight" / WEIGHTS)
    assert resumed.keys() == straight.keys()
    assert [name for name in straight if not torch.equal(resumed[name], straight[name])] == []


def test_a_target_guided_run_resumed_mid_way_ends_with_the_uninterrupted_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The resumed run loads its target teacher after restoring the random streams of its
    checkpoint: loading must not draw from them, or dropout differs from then on."""
    changes = {"training.epochs": 2, "training.keep_last": STEPS, "experiment.teacher_cache": "cache"}
    build_review_workspace(tmp_path, changes)
    monkeypatch.chdir(tmp_path)
    assert cli.main(_command("straight")) == 0
    resumed_at = 5
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    for checkpoint in list_checkpoints(tmp_path / "resumed" / CHECKPOINTS_DIR):
        if parse_step(checkpoint.name) > resumed_at:  # as if killed after step 5's checkpoint
            shutil.rmtree(checkpoint)
    shutil.rmtree(tmp_path / "resumed" / STUDENT_DIR)

    capsys.readouterr()
    assert cli.main(_command("resumed", "--resume")) == 0
    trained = [int(step) for step in re.findall(r"^\[train step (\d+)/", capsys.readouterr().err, re.M)]
    assert trained == list(range(resumed_at + 1, STEPS + 1))
    resumed, straight = read_tensors(tmp_path / "resumed" / WEIGHTS), read_tensors(tmp_path / "straight" / WEIGHTS)
    assert [name for name in straight if not torch.equal(resumed[name], straight[name])] == []
