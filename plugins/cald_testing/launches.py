"""``python -m cald_framework run`` on one process or under ``torchrun``, and what it logged.

The *fair* workspace makes runs on different numbers of processes comparable: with
``group_by_length = false`` an epoch's order is a permutation that does not depend on the
batch size, and the engine deals per-process batches round-robin, so two processes with batch
``b`` see at each step exactly the rows that one process sees in its batch of ``2b``. Every
review has six words (no padding) and dropout is off, so what remains is float32 rounding.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.layout import STUDENT_DIR, parse_step

from .workspaces import build_review_workspace

#: offline, one thread per process (two processes share the cores)
ENVIRONMENT = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
#: the loss terms every train event of a guided run logs
TERMS = ("loss", "task", "kd", "ld")


def build_fair_workspace(root: Path, save_every: int | None) -> Path:
    """The review workspace, one short epoch, comparable across numbers of processes."""
    changes = {
        "teacher.num_waypoints": 2,
        "teacher.finetune.epochs": 1,
        "training.epochs": 1,
        "training.group_by_length": False,
        "training.save_every": save_every,
    }
    build_review_workspace(root, changes, dropout=0.0)
    return root


def run_command(output: str, processes: int, batch_size: int, *settings: str) -> list[str]:
    """``run spec.toml`` into ``output`` (under ``torchrun`` when ``processes > 1``), with
    ``--set`` for each of ``settings``."""
    command = [sys.executable, "-m", "cald_framework", "run", "spec.toml"]
    for setting in (f"experiment.output_dir={output}", f"training.batch_size={batch_size}", *settings):
        command += ["--set", setting]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return command


def train_events(metrics: Path) -> list[dict[str, Any]]:
    """The per-step events of a ``metrics.jsonl``."""
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [event for event in events if event["event"] == "train"]


def largest_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """The largest difference of any logged loss term between two runs of the same steps."""
    assert [event["step"] for event in a] == [event["step"] for event in b]
    return max(abs(x[term] - y[term]) for x, y in zip(a, b) for term in TERMS if term in x)


def run_to_completion(workspace: Path, command: list[str]) -> None:
    """Run ``command`` in ``workspace``; fail with the end of its errors when it fails."""
    done = subprocess.run(command, cwd=workspace, env=ENVIRONMENT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-6000:]


def kill_with_workers(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL torchrun and its workers at once, as a crash of the machine would (the workers
    run in sessions of their own, so killing torchrun's process group would leave them on)."""
    launcher = psutil.Process(process.pid)
    for doomed in [*launcher.children(recursive=True), launcher]:
        with contextlib.suppress(psutil.NoSuchProcess):
            doomed.send_signal(signal.SIGKILL)
    process.wait()


def can_launch_cpu_processes() -> bool:
    """Whether torch can make a process group of CPU processes (the gloo backend)."""
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


def _checkpoint_steps(directory: Path) -> list[int]:
    steps = [parse_step(entry.name) for entry in directory.iterdir()] if directory.is_dir() else []
    return sorted(step for step in steps if step is not None)


def kill_at_first_checkpoint_and_resume(
    workspace: Path, command: list[str], checkpoints: Path, steps: int, patience: float
) -> None:
    """Start ``command``, SIGKILL it with its workers as soon as ``checkpoints`` holds a
    checkpoint (at most ``patience`` seconds after the start), then run it again with
    ``--resume``. The kill must leave a checkpoint before the last of ``steps``."""
    process = subprocess.Popen(command, cwd=workspace, env=ENVIRONMENT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline and process.poll() is None and not _checkpoint_steps(checkpoints):
        time.sleep(0.002)
    kill_with_workers(process)
    survivors = _checkpoint_steps(checkpoints)
    assert survivors, "no checkpoint was written before the deadline"
    assert survivors[-1] < steps, "the run finished its steps before it was killed"
    run_to_completion(workspace, [*command, "--resume"])


def assert_resumed_bitwise(workspace: Path, resumed: str, uninterrupted: str) -> None:
    """The run in ``resumed`` (killed, then resumed) logged the losses of the run in
    ``uninterrupted`` step for step and exported bitwise the same student weights."""
    events = train_events(workspace / resumed / "metrics.jsonl")
    reference = train_events(workspace / uninterrupted / "metrics.jsonl")
    assert {e["step"]: e["loss"] for e in events} == {e["step"]: e["loss"] for e in reference}
    weights = Path(STUDENT_DIR) / "model.safetensors"
    a, b = read_tensors(workspace / resumed / weights), read_tensors(workspace / uninterrupted / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
