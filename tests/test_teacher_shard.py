"""Frozen teachers sharded with FSDP2 over two CPU processes (gloo) train exactly like replicated ones.

The runs share one teacher fine-tuning (``experiment.teacher_cache``), so they differ only in
``training.distributed.teacher``: sharding moves parameters, not arithmetic, and the loss
curves agree to float32 rounding (measured: exactly). ``benchmarks/bench_teacher_layout.py``
checks what each process holds: half of the teacher's parameter bytes, and the whole
teacher's logits and hidden states, also after a second teacher replaced the first.

Marked ``reliability`` (about a minute on two cores), like ``test_fsdp.py`` whose launches
these reuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cald_testing.launches import (
    ENVIRONMENT,
    build_fair_workspace,
    largest_difference,
    run_command,
    run_to_completion,
    train_events,
)

from tests.test_fsdp import pytestmark as fsdp_marks

pytestmark = fsdp_marks

TOLERANCE = 1e-6
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_teacher_layout.py"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fair_workspace(tmp_path_factory.mktemp("teacher-shard"), save_every=None)


#: the teacher is sharded whatever the student's layout: replicated (ddp) or sharded (fsdp)
@pytest.mark.parametrize(("mode", "strategy"), [("target", "ddp"), ("waypoint", "fsdp")])
def test_a_sharded_teacher_gives_the_replicated_teachers_loss_curve(workspace: Path, mode: str, strategy: str) -> None:
    curves = {}
    for layout in ("replicate", "shard"):
        settings = (
            f"guidance.mode={mode}",
            f"training.distributed.strategy={strategy}",
            f"training.distributed.teacher={layout}",
            "experiment.teacher_cache=cache",
        )
        run_to_completion(workspace, run_command(f"{mode}-{layout}", 2, 4, *settings))
        curves[layout] = train_events(workspace / f"{mode}-{layout}" / "metrics.jsonl")
    # the teacher was used: a layer loss on every step after the first (under target guidance
    # the student starts out computing what the target computes, so the first one is zero)
    assert len(curves["shard"]) == 6 and all(event["ld"] > 0 for event in curves["shard"][1:])
    difference = largest_difference(curves["shard"], curves["replicate"])
    print(f"\n{mode}, {strategy} student: max |sharded - replicated| loss term = {difference:.2e}")
    assert difference <= TOLERANCE


def test_each_process_holds_half_the_teacher_and_computes_the_whole_one(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(BENCH),
        "--layout", "shard", "--hidden", "16", "--layers", "2", "--vocab", "60", "--out", str(tmp_path),
    ]
    done = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    ranks = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank-*.json"))]
    assert [report["rank"] for report in ranks] == [0, 1]
    for seed in range(2):  # the second teacher replaced the first, as waypoints do
        rows = [report["teachers"][seed] for report in ranks]
        whole = rows[0]["whole_bytes"]
        assert sum(row["local_bytes"] for row in rows) == whole
        assert all(abs(row["local_bytes"] - whole / 2) < 0.02 * whole for row in rows)
        assert all(row["largest_difference"] <= TOLERANCE for row in rows)
