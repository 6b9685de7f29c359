"""Two CPU processes under torchrun train exactly what one process does with twice the accumulation.

This file is also the worker that torchrun starts: ``python -m torch.distributed.run
--nproc_per_node N tests/test_engine_distributed.py OUT ACCUM`` (it runs as a single plain
process too). Each process saves its final student weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from cald_guidance.plugin import MODES

from cald_framework.contracts import AvailableTeachers, LossWeights
from cald_framework.engine import GuidanceSetup, LossConfig, read_tensors, train, write_tensors
from cald_framework.testing.engine import TinyModel, TinyTask, all_layers, evaluation, tiny_data, training

WORKER = Path(__file__)


def main(out: Path, accumulation: int) -> None:
    """A trajectory-guided run of the tiny model, as one process of a torchrun job or alone."""
    trajectory = {mode.name: mode for mode in MODES}["trajectory"]
    teachers = AvailableTeachers(source=lambda: TinyModel(seed=7, dropout=0.0))
    student = TinyModel(seed=1, dropout=0.0)
    train(
        student, TinyTask(), tiny_data(), loss=LossConfig(LossWeights(1.0, 1.0, 1.0)),
        training=training(max_steps=3, batch_size=2, grad_accum=accumulation),
        evaluation=evaluation(), output_dir=out, seed=0, extractor=all_layers,
        guidance=GuidanceSetup(trajectory, trajectory.options(), teachers),
    )
    write_tensors(out / f"final-rank{os.environ.get('RANK', '0')}.safetensors", student.state_dict())


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


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
