"""Training-step time of target-guided over unguided training, same student, same batches.

A MiniLM-sized BERT (6 layers, width 384, 12 heads) is the teacher; its Linformer conversion is
the student. Two trainers of the engine take turns at ``Trainer.step`` (one optimizer step:
forward, losses, backward, clip, AdamW) on the same batch of synthetic text-classification
data, in interleaved pairs (see :mod:`paired`); the figures are medians after a warm-up. The
guided run adds one teacher forward per micro-batch (inference mode, eval mode, autocast with
``--precision bf16``), reused for the KD and LD targets. Prints both medians and their ratio.
Not a test: the figures depend on the machine.

    python benchmarks/bench_guidance_overhead.py [--steps 10] [--warmup 2] [--batch 16]
        [--length 128] [--layers 6] [--width 384] [--precision fp32|bf16] [--k 64]
        [--teacher-precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from paired import paired_times  # noqa: E402
from text_workload import bert_teacher, linformer_student, text_task  # noqa: E402

from cald_framework.contracts import AvailableTeachers, LossWeights, TaskData  # noqa: E402
from cald_framework.engine import GuidanceSetup, LossConfig, Trainer  # noqa: E402
from cald_framework.modeling import CaldModel  # noqa: E402
from cald_framework.plugin_manager import Registries, load_registries  # noqa: E402
from cald_framework.spec.sections import EvaluationSection, TrainingSection  # noqa: E402


def _trainers(
    args: argparse.Namespace, registries: Registries, directory: Path
) -> tuple[Trainer, Trainer, TaskData]:
    """An unguided and a target-guided trainer over the same student and data."""
    task, data = text_task(directory, args.batch, args.length, registries)

    def teacher() -> CaldModel:
        return bert_teacher(data, layers=args.layers, width=args.width, length=args.length)

    extractor = registries.extractors.get("hidden_states")
    target = registries.guidance.get("target")
    training = TrainingSection(
        batch_size=args.batch, max_steps=10 * (args.steps + args.warmup), precision=args.precision,
        group_by_length=False, log_every=10 * (args.steps + args.warmup),
    )
    teachers = AvailableTeachers(target=teacher, precision=args.teacher_precision)
    trainers = []
    for guided in (False, True):
        trainers.append(Trainer(
            linformer_student(teacher(), registries, k=args.k, length=args.length), task, data,
            training=training, evaluation=EvaluationSection(),
            loss=LossConfig(LossWeights(1.0, 1.0, 1.0) if guided else LossWeights(1.0)),
            output_dir=directory / str(guided), seed=0,
            guidance=GuidanceSetup(target, target.options(), teachers) if guided else None,
            extractor=extractor.build(extractor.options()),
        ))
    return trainers[0], trainers[1], data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring (at least 1)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--k", type=int, default=64, help="Linformer rank of the student")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--teacher-precision", choices=["fp32", "bf16"], default=None,
                        help="the teacher's precision (default: that of the run)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    registries = load_registries()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        unguided_trainer, guided_trainer, data = _trainers(args, registries, directory)
        batch = data.collate([data.train[i] for i in range(args.batch)])
        unguided_times, guided_times = paired_times(
            lambda: unguided_trainer.step([batch]), lambda: guided_trainer.step([batch]),
            pairs=args.steps, warmup=args.warmup, device=unguided_trainer.device, clock="wall",
        )
    unguided, guided = statistics.median(unguided_times), statistics.median(guided_times)
    ratios = [g / u for g, u in zip(guided_times, unguided_times)]
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {device}, {args.layers} layers x {args.width}, batch {args.batch} x {args.length} "
          f"tokens, {args.precision} (teacher {args.teacher_precision or args.precision}), median of {args.steps} steps after {args.warmup} warm-up")
    print(f"unguided step      {unguided * 1000:9.1f} ms")
    print(f"target-guided step {guided * 1000:9.1f} ms")
    print(f"ratio of medians   {guided / unguided:9.2f}x")
    print(f"median step ratio  {statistics.median(ratios):9.2f}x")


if __name__ == "__main__":
    main()
