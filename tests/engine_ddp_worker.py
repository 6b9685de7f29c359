"""Worker of ``test_engine_distributed``: one process of a trajectory-guided run under torchrun.

Usage: ``python -m torch.distributed.run --nproc_per_node N tests/engine_ddp_worker.py OUT ACCUM``
(also runs as a single plain process). Each process saves its final student weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cald_framework.contracts import AvailableTeachers, LossWeights  # noqa: E402
from cald_framework.engine import GuidanceSetup, LossConfig, train, write_tensors  # noqa: E402
from cald_guidance.plugin import MODES  # noqa: E402
from tests.engine_fixtures import TinyModel, TinyTask, all_layers, evaluation, tiny_data, training  # noqa: E402


def main(out: Path, accumulation: int) -> None:
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


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
