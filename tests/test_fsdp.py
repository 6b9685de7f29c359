"""FSDP2 on two CPU processes (gloo): the sharded run follows the unsharded one and resumes bitwise.

The workspace is the fair one of ``cald_testing.launches`` (as in ``test_distributed.py``):
two processes with batch 4 see at each step the rows one process sees in its batch of 8, so
the only difference left between the sharded and the whole run is float32 rounding. The
teacher's fine-tuning is sharded too (``[teacher.finetune]`` inherits ``[training]``).

These runs take minutes on two shared cores: they are marked ``reliability`` and run by
``make reliability``, not by the default ``pytest``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cald_testing.launches import (
    assert_resumed_bitwise,
    build_fair_workspace,
    can_launch_cpu_processes,
    kill_at_first_checkpoint_and_resume,
    largest_difference,
    run_command,
    run_to_completion,
    train_events,
)

from cald_framework.engine.checkpoints import list_checkpoints
from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.layout import CHECKPOINTS_DIR, STUDENT_DIR

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(
        not can_launch_cpu_processes(), reason="torch.distributed with the gloo backend is needed to launch two CPU processes"
    ),
]

TOLERANCE = 1e-5
SHARDED = "training.distributed.strategy=fsdp"
#: two epochs of 6 steps: the killed run has steps left to redo however late the kill lands
TWO_EPOCHS = "training.epochs=2"
STEPS = 12
WEIGHTS = Path(STUDENT_DIR) / "model.safetensors"
#: how long the killed run may take to write its first checkpoint (start-up included)
PATIENCE_SECONDS = 240.0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fair workspace with an uninterrupted sharded run in ``sharded/``."""
    root = build_fair_workspace(tmp_path_factory.mktemp("fsdp"), save_every=1)
    run_to_completion(root, run_command("sharded", 2, 4, SHARDED, TWO_EPOCHS))
    return root


def test_two_sharded_processes_follow_one_unsharded_process(workspace: Path) -> None:
    run_to_completion(workspace, run_command("whole", 1, 8, TWO_EPOCHS))
    sharded = train_events(workspace / "sharded" / "metrics.jsonl")
    whole = train_events(workspace / "whole" / "metrics.jsonl")
    assert [event["step"] for event in sharded] == list(range(1, STEPS + 1))
    difference = largest_difference(sharded, whole)
    print(f"\nFSDP loss curve: max |2 sharded x batch 4 - 1 x batch 8| = {difference:.2e}")
    assert difference < TOLERANCE
    (teacher_sharded,) = (workspace / "sharded" / "teacher-cache").glob("*/metrics.jsonl")
    (teacher_whole,) = (workspace / "whole" / "teacher-cache").glob("*/metrics.jsonl")
    assert largest_difference(train_events(teacher_sharded), train_events(teacher_whole)) < TOLERANCE
    last = list_checkpoints(workspace / "sharded" / CHECKPOINTS_DIR)[-1]
    assert sorted(path.name for path in last.glob("*.rank-*")) == [
        f"{part}.rank-{rank:05d}.safetensors" for part in ("model", "optimizer") for rank in (0, 1)
    ]
    a, b = read_tensors(workspace / "sharded" / WEIGHTS), read_tensors(workspace / "whole" / WEIGHTS)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=TOLERANCE, msg=name)


def test_a_killed_sharded_run_resumes_bitwise(workspace: Path) -> None:
    """SIGKILL both processes at the first checkpoint, resume, compare with the unkilled run."""
    command = run_command("killed", 2, 4, SHARDED, TWO_EPOCHS)
    kill_at_first_checkpoint_and_resume(workspace, command, workspace / "killed" / CHECKPOINTS_DIR, STEPS, PATIENCE_SECONDS)
    assert_resumed_bitwise(workspace, "killed", "sharded")
