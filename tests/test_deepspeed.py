"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (DeepSpeed's CPU accelerator, gloo): each
follows one unsharded process, and a killed ZeRO-3 run resumes bitwise.

The workspace is the fair one of ``cald_testing.launches`` (see ``test_fsdp.py``), with two
micro-batches per step and parameter groups (the new mixers at 4x the rate, the embeddings
frozen, decay on the new parameters only), so DeepSpeed's accumulation, its handling of the
optimizer's groups and the engine's LR schedule are all in the comparison. The teacher's
fine-tuning runs under DeepSpeed too (``[teacher.finetune]`` inherits ``[training]``).

These runs take about two minutes on two shared cores: they are marked ``reliability``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from cald_testing.launches import (
    assert_resumed_bitwise,
    build_fair_workspace,
    kill_at_first_checkpoint_and_resume,
    largest_difference,
    run_command,
    run_to_completion,
    train_events,
)

from cald_framework.engine.checkpoints import list_checkpoints
from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.layout import CHECKPOINTS_DIR, STUDENT_DIR
from tests.test_fsdp import pytestmark as fsdp_marks

pytestmark = [
    *fsdp_marks,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]

TOLERANCE = 1e-5
#: two epochs of 3 steps of 2 micro-batches, parameter groups, decay on the new parameters
SETTINGS = (
    "training.epochs=2",
    "training.grad_accum=2",
    'training.param_groups=[{select="new", lr_scale=4.0}, {pattern="*embeddings*", freeze=true}]',
    "training.weight_decay_on=new",
)
STEPS = 6
TRAJECTORY = "guidance.mode=trajectory"
WEIGHTS = Path(STUDENT_DIR) / "model.safetensors"
#: how long the killed run may take to write its first checkpoint (start-up included)
PATIENCE_SECONDS = 240.0


def _zero(stage: int) -> tuple[str, ...]:
    return ("training.distributed.strategy=deepspeed", f"training.distributed.zero_stage={stage}", *SETTINGS)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fair workspace with one unsharded run in ``whole/`` and a ZeRO-3 run in ``zero-3/``."""
    root = build_fair_workspace(tmp_path_factory.mktemp("deepspeed"), save_every=1)
    run_to_completion(root, run_command("whole", 1, 8, *SETTINGS))
    run_to_completion(root, run_command("zero-3", 2, 4, *_zero(3)))
    return root


def _assert_follows(workspace: Path, run: str, whole: str) -> None:
    """``run`` logs the loss curve and exports the student of ``whole`` (one process)."""
    zero, alone = train_events(workspace / run / "metrics.jsonl"), train_events(workspace / whole / "metrics.jsonl")
    assert [event["step"] for event in zero] == list(range(1, STEPS + 1))
    assert [event["lr"] for event in zero] == [event["lr"] for event in alone]
    difference = largest_difference(zero, alone)
    print(f"\n{run} loss curve: max difference from {whole} = {difference:.2e}")
    assert difference < TOLERANCE
    student, reference = workspace / run / STUDENT_DIR, workspace / whole / STUDENT_DIR
    assert sorted(path.name for path in student.iterdir()) == sorted(path.name for path in reference.iterdir())
    assert (student / "config.json").read_text() == (reference / "config.json").read_text()
    a, b = read_tensors(workspace / run / WEIGHTS), read_tensors(workspace / whole / WEIGHTS)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=TOLERANCE, msg=name)


def test_two_zero_3_processes_follow_one_unsharded_process(workspace: Path) -> None:
    _assert_follows(workspace, "zero-3", "whole")
    (teacher_zero,) = (workspace / "zero-3" / "teacher-cache").glob("*/metrics.jsonl")
    (teacher_whole,) = (workspace / "whole" / "teacher-cache").glob("*/metrics.jsonl")
    assert largest_difference(train_events(teacher_zero), train_events(teacher_whole)) < TOLERANCE
    last = list_checkpoints(workspace / "zero-3" / CHECKPOINTS_DIR)[-1]
    recorded = json.loads((last / "state.json").read_text())["files"]
    partitions = [f"deepspeed/engine/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)]
    assert set(partitions) <= set(recorded) and "model.safetensors" not in recorded


def test_two_zero_2_processes_follow_one_process_with_a_co_trained_teacher(workspace: Path) -> None:
    """Trajectory guidance: the teacher trains alongside the student, outside DeepSpeed, with
    its gradients averaged over the processes by the engine's updater."""
    run_to_completion(workspace, run_command("whole-trajectory", 1, 8, TRAJECTORY, *SETTINGS))
    run_to_completion(workspace, run_command("zero-2", 2, 4, TRAJECTORY, *_zero(2)))
    _assert_follows(workspace, "zero-2", "whole-trajectory")


def test_one_process_that_no_launcher_started_trains_under_zero_2(workspace: Path) -> None:
    """How ``scripts/gpu_check.sh`` runs ZeRO-2 on one GPU: the run makes its own process group."""
    run_to_completion(workspace, run_command("alone", 1, 8, *_zero(2)))
    _assert_follows(workspace, "alone", "whole")


def test_a_killed_zero_3_run_resumes_bitwise(workspace: Path) -> None:
    """SIGKILL both processes at the first checkpoint, resume, compare with the unkilled run."""
    command = run_command("killed", 2, 4, *_zero(3))
    kill_at_first_checkpoint_and_resume(workspace, command, workspace / "killed" / CHECKPOINTS_DIR, STEPS, PATIENCE_SECONDS)
    assert_resumed_bitwise(workspace, "killed", "zero-3")
