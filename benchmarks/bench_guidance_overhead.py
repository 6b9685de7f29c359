"""Training-step time of target-guided over unguided training, same student, same batches.

A MiniLM-sized BERT (6 layers, width 384, 12 heads) is the teacher; its Linformer conversion is
the student. Two runs of the engine (its own optimizer step: forward, losses, backward, clip,
AdamW) take turns on the same batch of synthetic text-classification data, so that changes in
the machine's load hit both alike; the figures are medians after a warm-up. The guided run adds one teacher forward per micro-batch (inference mode, eval mode,
autocast with ``--precision bf16``), reused for the KD and LD targets. Prints both medians and
their ratio. Not a test: the figures depend on the machine.

    python benchmarks/bench_guidance_overhead.py [--steps 10] [--warmup 2] [--batch 16]
        [--length 128] [--layers 6] [--width 384] [--precision fp32|bf16] [--k 64]
        [--teacher-precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from cald_framework.contracts import TaskData  # noqa: E402
from cald_framework.conversion import convert  # noqa: E402
from cald_framework.engine import GuidanceSetup, LossConfig, LossWeights, TeacherSources  # noqa: E402
from cald_framework.engine.logbook import Logbook  # noqa: E402
from cald_framework.engine.trainer import _Run, _Settings  # noqa: E402  (to time single steps)
from cald_framework.modeling import CaldModel  # noqa: E402
from cald_framework.plugin_manager import Registries, load_registries  # noqa: E402
from cald_framework.spec.sections import EvaluationSection, TrainingSection  # noqa: E402
from cald_framework.testing.text import word_level_tokenizer  # noqa: E402

VOCABULARY = [f"w{i}" for i in range(500)]


def _data(directory: Path, rows: int, length: int, registries: Registries) -> tuple[object, TaskData]:
    """Random ``length``-word texts with random labels, through the real text-classification task."""
    rng = random.Random(0)
    for split, count in (("train", rows), ("validation", 16)):
        lines = ["text,label"] + [
            f"{' '.join(rng.choices(VOCABULARY, k=length))},{rng.choice('ab')}" for _ in range(count)
        ]
        (directory / f"{split}.csv").write_text("\n".join(lines) + "\n")
    plugin = registries.tasks.get("text-classification")
    options = plugin.options.model_validate({
        "dataset": "csv",
        "data_files": {split: str(directory / f"{split}.csv") for split in ("train", "validation")},
        "max_length": length,
        "cache_dir": str(directory / "cache"),
    })
    task = plugin.build(options)
    return task, task.build_data(word_level_tokenizer([" ".join(VOCABULARY)]), seed=0)


def _runs(args: argparse.Namespace, registries: Registries, directory: Path) -> tuple[Any, Any, TaskData]:
    """An unguided and a target-guided run of the engine over the same student and data."""
    task, data = _data(directory, args.batch, args.length, registries)
    config = {
        "model_type": "bert", "vocab_size": 512, "hidden_size": args.width,
        "intermediate_size": 4 * args.width, "num_hidden_layers": args.layers,
        "num_attention_heads": args.width // 32, "max_position_embeddings": args.length,
    }

    def teacher() -> CaldModel:
        torch.manual_seed(0)
        return CaldModel.from_source_config("bert", config, data.head, max_length=args.length)

    linformer = registries.mixers.get("linformer")
    extractor = registries.extractors.get("hidden_states")
    target = registries.guidance.get("target")
    training = TrainingSection(
        batch_size=args.batch, max_steps=10 * (args.steps + args.warmup), precision=args.precision,
        group_by_length=False, log_every=10 * (args.steps + args.warmup),
    )
    teachers = TeacherSources(target=teacher, precision=args.teacher_precision)
    runs = []
    for guided in (False, True):
        student, _ = convert(teacher(), linformer, {"k": args.k}, args.length)
        settings = _Settings(
            training, EvaluationSection(),
            LossConfig(LossWeights(1.0, 1.0, 1.0) if guided else LossWeights(1.0)),
            directory / str(guided), 0,
            GuidanceSetup(target, target.options(), teachers) if guided else None,
            extractor.build(extractor.options()), None,
        )
        runs.append(_Run(student, task, data, settings))
    return runs[0], runs[1], data


def _time_step(run: Any, batch: dict[str, Any], directory: Path) -> float:
    log = Logbook(directory, run.accelerator, total_steps=run.total_steps, start_step=0, resumed=False, tracked=False)
    started = time.perf_counter()
    run._step([batch], updates=run.total_steps, log=log)
    return time.perf_counter() - started


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
    times: dict[str, list[float]] = {"unguided": [], "guided": []}
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        unguided_run, guided_run, data = _runs(args, registries, directory)
        batch = data.collate([data.train[i] for i in range(args.batch)])
        for attempt in range(args.warmup + args.steps):
            # alternate, so that a change in the machine's load hits both alike
            for name, run in (("unguided", unguided_run), ("guided", guided_run)):
                seconds = _time_step(run, batch, directory / name)
                if attempt >= args.warmup:
                    times[name].append(seconds)
    unguided, guided = statistics.median(times["unguided"]), statistics.median(times["guided"])
    ratios = [g / u for g, u in zip(times["guided"], times["unguided"])]
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {device}, {args.layers} layers x {args.width}, batch {args.batch} x {args.length} "
          f"tokens, {args.precision} (teacher {args.teacher_precision or args.precision}), median of {args.steps} steps after {args.warmup} warm-up")
    print(f"unguided step      {unguided * 1000:9.1f} ms")
    print(f"target-guided step {guided * 1000:9.1f} ms")
    print(f"ratio of medians   {guided / unguided:9.2f}x")
    print(f"median step ratio  {statistics.median(ratios):9.2f}x")


if __name__ == "__main__":
    main()
