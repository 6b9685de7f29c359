"""The engine with the real pieces: a tiny BERT teacher, the text-classification task, the
Linformer mixer and the hidden-state extractor, all looked up by name in the registries."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from cald_framework.testing.text import word_level_tokenizer

from cald_framework.contracts import AvailableTeachers, HeadSpec, LossWeights
from cald_framework.conversion import convert
from cald_framework.engine import GuidanceSetup, LossConfig, finetune_teacher, read_tensors, train
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.testing.engine import evaluation, training

WORDS = "good bad fine dull great awful nice poor".split()
POSITIVE = {"good", "fine", "great", "nice"}
BERT = {
    "model_type": "bert", "vocab_size": 16, "hidden_size": 16, "intermediate_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 16,
}


def _write_reviews(directory: Path) -> dict[str, str]:
    rng = random.Random(0)
    files = {}
    for split, count in (("train", 24), ("validation", 8)):
        lines = ["text,label"]
        for _ in range(count):
            words = [rng.choice(WORDS) for _ in range(rng.randrange(2, 6))]
            lines.append(f"{' '.join(words)},{'pos' if words[0] in POSITIVE else 'neg'}")
        path = directory / f"{split}.csv"
        path.write_text("\n".join(lines) + "\n")
        files[split] = str(path)
    return files


def test_finetune_then_waypoint_guided_training_of_a_linformer_student(tmp_path: Path) -> None:
    registries = load_registries()
    task_plugin = registries.tasks.get("text-classification")
    options = task_plugin.options.model_validate(
        {"dataset": "csv", "data_files": _write_reviews(tmp_path), "cache_dir": str(tmp_path / "cache")}
    )
    task = task_plugin.build(options)
    data = task.build_data(word_level_tokenizer([" ".join(WORDS)]), seed=0)
    assert data.head == HeadSpec("classification", 2)

    def source() -> CaldModel:
        torch.manual_seed(0)
        return CaldModel.from_source_config("bert", BERT, data.head, max_length=16)

    settings = training(max_steps=4, batch_size=4, lr=5e-3, group_by_length=True)
    finetuned = finetune_teacher(
        source(), task, data, training=settings, evaluation=evaluation(), output_dir=tmp_path / "teacher",
        num_waypoints=2, seed=0,
    )
    target = CaldModel.from_pretrained(finetuned.target_dir)
    assert [w.step for w in finetuned.waypoints] == [2, 4]

    def load_waypoint(path: Path) -> CaldModel:
        model = source()
        model.load_state_dict(read_tensors(path))
        return model

    student, _ = convert(source(), registries.mixers.get("linformer"), {"k": 4}, max_length=16)
    extractor_plugin = registries.extractors.get("hidden_states")
    guidance = registries.guidance.get("waypoint")
    result = train(
        student, task, data, training=settings, evaluation=evaluation(every=2),
        loss=LossConfig(LossWeights(1.0, 1.0, 1.0)), output_dir=tmp_path / "student", seed=0,
        guidance=GuidanceSetup(
            guidance, guidance.options(),
            AvailableTeachers(source=source, target=lambda: target, waypoints=finetuned.waypoints, load_teacher=load_waypoint),
        ),
        extractor=extractor_plugin.build(extractor_plugin.options()),
    )
    events = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    trained = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in trained] == [1, 2, 3, 4]
    assert all(e["kd"] >= 0 and e["ld"] > 0 and e["task"] > 0 for e in trained)
    assert set(result.metrics) >= {"accuracy", task.primary_metric}
    assert result.model is student and student.config.mixer == "linformer"
