"""What the engine's training step costs on top of a plain PyTorch loop, same model and batch.

``Trainer.step`` (unguided, fp32, one micro-batch, constant learning rate) and a plain loop
(forward, task loss, backward, ``clip_grad_norm_``, AdamW step, ``zero_grad``) each train their
own copy of the same student, a Linformer conversion of a BERT (default: MiniLM-sized, 6
layers of width 384), on the same batch of synthetic text classification, with the same
AdamW parameter groups and settings. Steps are timed in interleaved pairs (see :mod:`paired`);
the figures are medians after a warm-up. Dropout is off, so both loops do the same arithmetic,
and the script checks that the two copies end with identical weights.

    python benchmarks/bench_engine_overhead.py [--pairs 30] [--warmup 3] [--batch 16]
        [--length 128] [--layers 6] [--width 384] [--k 64] [--clock wall|cpu]

``--clock cpu`` reads the CPU time of the calling thread with torch on one thread, which other
jobs on a shared machine barely disturb. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from paired import paired_times  # noqa: E402
from text_workload import bert_teacher, linformer_student, text_task  # noqa: E402
from torch import nn  # noqa: E402

from cald_framework.analysis.measure import CLOCKS  # noqa: E402
from cald_framework.analysis.output import format_table  # noqa: E402
from cald_framework.contracts import Task  # noqa: E402
from cald_framework.engine import LossConfig, Trainer  # noqa: E402
from cald_framework.engine.batching import to_device  # noqa: E402
from cald_framework.engine.optim import parameter_groups  # noqa: E402
from cald_framework.plugin_manager import load_registries  # noqa: E402
from cald_framework.spec.sections import EvaluationSection, TrainingSection  # noqa: E402


def plain_step(
    model: nn.Module, task: Task, training: TrainingSection
) -> Callable[[Mapping[str, Any]], None]:
    """The textbook training step, with the optimizer settings the engine derives from ``training``."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, training.weight_decay), lr=training.lr, betas=training.betas,
        eps=training.eps,
    )
    assert training.max_grad_norm is not None
    max_norm = training.max_grad_norm
    model.train()

    def step(batch: Mapping[str, Any]) -> None:
        output = model(**batch["inputs"])
        loss = task.loss(output, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30, help="measured pairs of steps")
    parser.add_argument("--warmup", type=int, default=3, help="pairs before measuring")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--k", type=int, default=64, help="Linformer rank of the student")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="cpu: CPU seconds of one torch thread, steadier when other jobs share the machine",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        torch.set_num_threads(1)
    registries = load_registries()
    steps = args.warmup + args.pairs
    training = TrainingSection(
        batch_size=args.batch, max_steps=steps, schedule="constant", precision="fp32",
        grad_accum=1, group_by_length=False, log_every=steps,
    )
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        task, data = text_task(directory, args.batch, args.length, registries)
        teacher = bert_teacher(data, layers=args.layers, width=args.width, length=args.length, dropout=0.0)
        student = linformer_student(teacher, registries, k=args.k, length=args.length)
        trainer = Trainer(
            copy.deepcopy(student), task, data, training=training, evaluation=EvaluationSection(),
            loss=LossConfig(), output_dir=directory / "run", seed=0,
        )
        device = trainer.device
        batch = to_device(data.collate([data.train[i] for i in range(args.batch)]), device)
        plain_model = copy.deepcopy(student).to(device)
        plain = plain_step(plain_model, task, training)
        engine_times, plain_times = paired_times(
            lambda: trainer.step([batch]), lambda: plain(batch),
            pairs=args.pairs, warmup=args.warmup, device=device, clock=args.clock,
        )
    same = all(
        torch.equal(value, plain_model.state_dict()[name])
        for name, value in trainer.student.state_dict().items()
    )
    engine_ms, plain_ms = statistics.median(engine_times) * 1000, statistics.median(plain_times) * 1000
    paired = statistics.median(e / p for e, p in zip(engine_times, plain_times))
    print(
        f"{device.type}, {torch.get_num_threads()} torch thread(s), clock {args.clock}; {args.layers} layers x "
        f"{args.width} (Linformer k={args.k}), batch {args.batch} x {args.length} tokens, fp32; "
        f"median of {args.pairs} interleaved pairs after {args.warmup}"
    )
    rows = [
        {"loop": "plain PyTorch", "ms_per_step": plain_ms, "vs_plain": 1.0},
        {"loop": "Trainer.step", "ms_per_step": engine_ms, "vs_plain": engine_ms / plain_ms},
    ]
    print(format_table(rows, ["loop", "ms_per_step", "vs_plain"]))
    print(f"median of paired ratios: {paired:.3f}x; identical weights after {steps} steps: {same}")


if __name__ == "__main__":
    main()
