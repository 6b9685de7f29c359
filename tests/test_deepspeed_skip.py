"""A loss that is not finite on one process skips the update on every process under ZeRO-2
and ZeRO-3, even when the gradients it gives are finite.

This file is also the worker that torchrun starts (``python -m torch.distributed.run
--nproc_per_node 2 tests/test_deepspeed_skip.py STAGE OUT``): a toy model goes through the
engine's accelerator and DeepSpeed step (:mod:`cald_framework.engine.zero_step`); at step 1
process 1 adds infinity to its loss. Each process writes one JSON line per step to
``OUT/rank-R.jsonl``. Marked
``reliability`` (two launches of DeepSpeed, about half a minute on two cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__)
POISONED_STEP, POISONED_RANK = 1, 1

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]


def main(stage: int, out: Path) -> None:
    """Three steps of a toy model under ZeRO-``stage``, as one process of a torchrun job."""
    from accelerate import PartialState

    from cald_framework.engine.layouts import make_accelerator
    from cald_framework.engine.zero_step import zero_backward, zero_update
    from cald_framework.spec.sections import TrainingSection

    PartialState(cpu=not torch.cuda.is_available())
    training = TrainingSection.model_validate(
        {"batch_size": 4, "max_grad_norm": 1.0, "distributed": {"strategy": "deepspeed", "zero_stage": stage}}
    )
    accelerator = make_accelerator(training, out)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    engine, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    torch.manual_seed(1 + accelerator.process_index)
    reports = []
    for step in range(3):
        inputs, targets = torch.randn(4, 8), torch.randn(4, 1)
        loss = ((engine(inputs) - targets) ** 2).mean()
        if step == POISONED_STEP and accelerator.process_index == POISONED_RANK:
            loss = loss + float("inf")  # the gradients stay finite
        before = accelerator.get_state_dict(engine)
        zero_backward(engine, loss, last=True)
        applied, _ = zero_update(engine, training.max_grad_norm)
        after = accelerator.get_state_dict(engine)
        unchanged = all(torch.equal(before[name], after[name]) for name in after) if after else None
        reports.append({"rank": accelerator.process_index, "step": step, "applied": applied, "unchanged": unchanged})
    (out / f"rank-{accelerator.process_index}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))


@pytest.mark.parametrize("stage", [2, 3])
def test_a_non_finite_loss_on_one_process_skips_the_update_everywhere(stage: int, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(stage), str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for rank in (0, 1) for line in (tmp_path / f"rank-{rank}.jsonl").read_text().splitlines()]
    assert len(reports) == 6
    for report in reports:
        skipped = report["step"] == POISONED_STEP
        assert report["applied"] is not skipped, report
        if report["rank"] == 0:  # the main process holds the whole weights
            assert report["unchanged"] is skipped, report


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
