"""The training workload the step benchmarks share: synthetic text classification, BERT teacher.

Random ``length``-word texts with random labels go through the real ``text-classification``
task; the teacher is a randomly initialised BERT of the size asked for, and the student its
Linformer conversion. Nothing is downloaded.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from cald_framework.contracts import Task, TaskData
from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import Registries
from cald_framework.testing.text import word_level_tokenizer

VOCABULARY = [f"w{i}" for i in range(500)]


def text_task(directory: Path, rows: int, length: int, registries: Registries) -> tuple[Task, TaskData]:
    """``rows`` training texts of ``length`` words (and 16 for evaluation) in ``directory``."""
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


def bert_teacher(data: TaskData, *, layers: int, width: int, length: int, dropout: float = 0.1) -> CaldModel:
    """A seeded BERT with ``width // 32`` heads and the task's head (the same on every call)."""
    config = {
        "model_type": "bert", "vocab_size": 512, "hidden_size": width,
        "intermediate_size": 4 * width, "num_hidden_layers": layers,
        "num_attention_heads": width // 32, "max_position_embeddings": length,
        "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
    }
    torch.manual_seed(0)
    return CaldModel.from_source_config("bert", config, data.head, max_length=length)


def linformer_student(teacher: CaldModel, registries: Registries, *, k: int, length: int) -> CaldModel:
    """``teacher`` converted to a Linformer of rank ``k``."""
    student, _ = convert(teacher, registries.mixers.get("linformer"), {"k": k}, length)
    return student
