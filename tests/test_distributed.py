"""``python -m cald_framework run`` under ``torchrun``: two CPU processes match one with twice the batch.

The comparison is fair by construction (see ``cald_testing.launches``): two processes with
batch ``b`` see at each step exactly the rows that one process sees in its batch of ``2b``, the
mean of the two per-process means is the mean over all rows, and nothing random depends on
the rank. What remains is float32 rounding.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import DistributedType
from cald_testing.launches import (
    ENVIRONMENT,
    TERMS,
    build_fair_workspace,
    largest_difference,
    run_command,
    train_events,
)

from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.engine.layouts import check_distributed_type
from cald_framework.errors import CaldError

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is needed to launch two CPU processes",
)

TOLERANCE = 1e-5
#: how accelerate wraps a module for training (``prepare`` of other objects are not this)
ACCELERATE_PREPARE = ("accelerator.prepare", "accelerator.prepare_model")


def _launch(workspace: Path, output: str, processes: int, batch_size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(output, processes, batch_size),
        cwd=workspace, env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _layout(root: Path) -> list[str]:
    """Every path under ``root``; the teacher cache's key, which hashes the batch size, as KEY."""
    paths = []
    for path in root.rglob("*"):
        parts = list(path.relative_to(root).parts)
        if parts[0] == "teacher-cache" and len(parts) > 1:
            parts[1] = "KEY"
        paths.append("/".join(parts))
    return sorted(paths)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same spec run by two processes with batch 4 and by one process with batch 8."""
    workspace = build_fair_workspace(tmp_path_factory.mktemp("distributed"), save_every=None)
    two = _launch(workspace, "two", processes=2, batch_size=4)
    one = _launch(workspace, "one", processes=1, batch_size=8)
    (workspace / "two.out").write_text(_finish(two))
    (workspace / "one.out").write_text(_finish(one))
    return workspace


def test_two_processes_follow_the_loss_curve_of_one_with_twice_the_batch(runs: Path) -> None:
    two, one = train_events(runs / "two" / "metrics.jsonl"), train_events(runs / "one" / "metrics.jsonl")
    assert len(two) == 6  # 48 training rows / 8 per step, one event per step
    difference = largest_difference(two, one)
    print(f"\ndistributed loss curve: max |2 x batch 4 - 1 x batch 8| = {difference:.2e} over {len(two)} steps")
    assert difference < TOLERANCE
    assert {term for term in TERMS if term in two[0]} == set(TERMS)


def test_the_teacher_fine_tuning_is_distributed_too(runs: Path) -> None:
    (two,) = (runs / "two" / "teacher-cache").glob("*/metrics.jsonl")
    (one,) = (runs / "one" / "teacher-cache").glob("*/metrics.jsonl")
    assert largest_difference(train_events(two), train_events(one)) < TOLERANCE


def test_both_end_with_the_same_student_and_metrics(runs: Path) -> None:
    two = read_tensors(runs / "two" / "student" / "model.safetensors")
    one = read_tensors(runs / "one" / "student" / "model.safetensors")
    assert two.keys() == one.keys()
    for name in two:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=TOLERANCE, msg=name)
    results = [json.loads((runs / out / "results.json").read_text()) for out in ("two", "one")]
    assert results[0]["student_metrics"] == pytest.approx(results[1]["student_metrics"], abs=1e-6)
    assert results[0]["steps"] == results[1]["steps"] == 6


def test_only_the_main_process_writes_and_reports(runs: Path) -> None:
    summary = (runs / "two.out").read_text()
    assert summary.count('"experiment"') == 1  # one JSON summary on stdout, from rank 0
    assert json.loads(summary)["results"] == "two/results.json"
    steps = [event["step"] for event in train_events(runs / "two" / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # each step logged once, already reduced over processes
    assert _layout(runs / "two") == _layout(runs / "one")


@pytest.mark.parametrize(("kind", "name"), [(DistributedType.DEEPSPEED, "DeepSpeed"), (DistributedType.XLA, "XLA")])
def test_layouts_the_trainer_does_not_drive_are_refused(kind: DistributedType, name: str) -> None:
    with pytest.raises(CaldError) as refused:
        check_distributed_type(kind)
    assert str(refused.value) == (
        f"the accelerate configuration asks for {name}, which the trainer does not support: use "
        "data-parallel processes or FSDP2 (see docs/distributed.md)"
    )


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_data_parallel_layouts_are_accepted(kind: DistributedType) -> None:
    check_distributed_type(kind)


def test_only_the_student_is_prepared_by_accelerate() -> None:
    """Teachers are moved to the device by ``GuidanceContext.prepare_teacher`` and never wrapped,
    so no teacher is sharded, synchronised by DDP or given to a DeepSpeed engine."""
    root = Path(__file__).resolve().parents[1]
    prepared = []
    for path in [*(root / "cald_framework").rglob("*.py"), *(root / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(ACCELERATE_PREPARE):
                prepared.append((path.name, ast.unparse(node)))
    assert prepared == [("trainer.py", "self.accelerator.prepare(trained, optimizer, scheduler)")]
