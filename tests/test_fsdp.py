"""FSDP2 on two CPU processes (gloo): the sharded run follows the unsharded one and resumes bitwise.

The setup is that of ``test_distributed.py`` (equal-length rows, no dropout, no length
grouping), so two processes with batch 4 see at each step the rows one process sees in its
batch of 8; the only difference left is float32 rounding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_testing.workspaces import build_review_workspace

from cald_framework.engine.tensorfiles import read_tensors

pytestmark = [
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is needed to launch two CPU processes",
    ),
    pytest.mark.skip(reason="unfinished: the sharded checkpoint write fails on a freed parameter storage"),
]

TOLERANCE = 1e-5
TERMS = ("loss", "task", "kd", "ld")
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _command(output: str, processes: int, batch_size: int, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "cald_framework", "run", "spec.toml", *extra]
    command += ["--set", f"experiment.output_dir={output}", "--set", f"training.batch_size={batch_size}"]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command += ["--set", "training.distributed.strategy=fsdp"]
    return command


def _run(workspace: Path, command: list[str]) -> None:
    done = subprocess.run(command, cwd=workspace, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[:12000]


def _train_events(metrics: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [event for event in events if event["event"] == "train"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    changes = {
        "teacher.num_waypoints": 2,
        "teacher.finetune.epochs": 1,
        "training.epochs": 1,
        "training.group_by_length": False,
        "training.save_every": 1,
    }
    build_review_workspace(root, changes, dropout=0.0)
    return root


def test_two_sharded_processes_follow_one_unsharded_process(workspace: Path) -> None:
    _run(workspace, _command("sharded", 2, 4))
    _run(workspace, _command("whole", 1, 8))
    sharded = _train_events(workspace / "sharded" / "metrics.jsonl")
    whole = _train_events(workspace / "whole" / "metrics.jsonl")
    assert [event["step"] for event in sharded] == [event["step"] for event in whole] == list(range(1, 7))
    difference = max(abs(a[t] - b[t]) for a, b in zip(sharded, whole) for t in TERMS if t in a)
    print(f"\nFSDP loss curve: max |2 sharded x batch 4 - 1 x batch 8| = {difference:.2e}")
    assert difference < TOLERANCE
    (checkpoint,) = [p for p in (workspace / "sharded" / "checkpoints").iterdir() if p.name.endswith("6")]
    assert sorted(p.name for p in checkpoint.glob("model.rank-*")) == [
        "model.rank-00000.safetensors",
        "model.rank-00001.safetensors",
    ]
    a = read_tensors(workspace / "sharded" / "student" / "model.safetensors")
    b = read_tensors(workspace / "whole" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=TOLERANCE, msg=name)


def test_a_killed_sharded_run_resumes_bitwise(workspace: Path) -> None:
    """SIGKILL the sharded run after its third checkpoint, resume it, compare with an unkilled one."""
    _run(workspace, _command("sharded", 2, 4)) if not (workspace / "sharded").exists() else None
    command = _command("killed", 2, 4)
    process = subprocess.Popen(command, cwd=workspace, env=ENVIRONMENT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = workspace / "killed" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (checkpoints / "step-00000003").is_dir():
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workspace / "killed" / "student").exists(), "the run finished before it was killed"
    _run(workspace, [*command, "--resume"])
    resumed = _train_events(workspace / "killed" / "metrics.jsonl")
    uninterrupted = _train_events(workspace / "sharded" / "metrics.jsonl")
    assert {e["step"]: e["loss"] for e in resumed} == {e["step"]: e["loss"] for e in uninterrupted}
    a = read_tensors(workspace / "killed" / "student" / "model.safetensors")
    b = read_tensors(workspace / "sharded" / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
