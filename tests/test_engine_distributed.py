"""Two CPU processes under torchrun train exactly what one process does with twice the accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cald_framework.engine import read_tensors
from tests.engine_ddp_worker import main

WORKER = Path(__file__).with_name("engine_ddp_worker.py")


def _launch(out: Path, processes: int, accumulation: int) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
        str(processes), str(WORKER), str(out), str(accumulation),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]


def test_two_processes_shard_data_and_sync_student_and_trajectory_teacher(tmp_path: Path) -> None:
    _launch(tmp_path / "two", processes=2, accumulation=2)
    main(tmp_path / "one", accumulation=4)  # the same run in this process
    rank0 = read_tensors(tmp_path / "two" / "final-rank0.safetensors")
    rank1 = read_tensors(tmp_path / "two" / "final-rank1.safetensors")
    alone = read_tensors(tmp_path / "one" / "final-rank0.safetensors")
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
        torch.testing.assert_close(value, alone[name], rtol=0, atol=1e-10)
    assert not (tmp_path / "two" / "final-rank1").exists()
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if '"train"' in line] == [1, 2, 3]
