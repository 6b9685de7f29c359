"""A tiny offline conversion workspace: a 2-layer BERT, a word tokenizer, a review table, a spec.

Reliability checks run real ``python -m cald_framework run`` processes on it; each one takes
seconds on a CPU, and nothing is downloaded.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from cald_tasks.testing import word_level_tokenizer
from transformers import BertConfig, BertModel

from cald_framework.layout import SPEC_FILE
from cald_framework.spec.toml_writer import dumps

TONE = {"fresh": ["great", "superb", "moving", "fun"], "rotten": ["dull", "boring", "messy", "flat"]}
FILLER = ["the", "film", "was", "a", "plot", "and", "cast", "very"]
MODEL_DIR = "tiny-bert"
DATA_FILE = "reviews.csv"

#: target guidance with a cached teacher fine-tuning run, a checkpoint after every step
SPEC: dict[str, Any] = {
    "experiment": {"name": "tiny", "output_dir": "run", "seed": 5},
    "teacher": {"source": "bert", "model": f"./{MODEL_DIR}", "finetune": {"epochs": 2, "lr": 1e-3}},
    "student": {"mixer": "linformer", "mixer_options": {"k": 8}},
    "task": {
        "kind": "text-classification",
        "dataset": "csv",
        "data_files": f"./{DATA_FILE}",
        "eval_from_train": 0.25,
        "max_length": 16,
    },
    "guidance": {"mode": "target"},
    "training": {"lr": 1e-3, "batch_size": 8, "epochs": 2, "log_every": 1, "save_every": 1},
}


def _review(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, 4) + rng.sample(TONE[label], 2)
    rng.shuffle(words)
    return " ".join(words)


def write_reviews(path: Path, rows: int = 64) -> None:
    """``rows`` labelled reviews, alternating fresh and rotten, as a CSV with a header."""
    rng = random.Random(0)
    labels = [("fresh", "rotten")[index % 2] for index in range(rows)]
    lines = ["text,label"] + [f"{_review(rng, label)},{label}" for label in labels]
    path.write_text("\n".join(lines) + "\n")


def write_bert(
    directory: Path, *, hidden_size: int = 16, extra_vocab: int = 0, dropout: float = 0.1
) -> None:
    """A randomly initialised 2-layer BERT and its word tokenizer.

    ``extra_vocab`` gives the tokenizer that many words more than the model has embeddings.
    """
    words = [word for tone in TONE.values() for word in tone] + FILLER
    tokenizer = word_level_tokenizer(words + [f"extra{index}" for index in range(extra_vocab)])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer) - extra_vocab,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def spec_with(changes: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`SPEC` with ``{"section.key": value}`` changes (``None`` deletes the key)."""
    spec = copy.deepcopy(SPEC)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        table = spec
        for part in parents:
            table = table.setdefault(part, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return spec


def build_workspace(
    root: Path, changes: Mapping[str, Any] | None = None, *, dropout: float = 0.1
) -> Path:
    """Write the model, the data and the spec (:func:`spec_with` ``changes``) into ``root``.

    Returns the spec's path; its paths are relative: run it with ``root`` as working directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    write_bert(root / MODEL_DIR, dropout=dropout)
    write_reviews(root / DATA_FILE)
    spec = root / SPEC_FILE
    spec.write_text(dumps(spec_with(changes or {})))
    return spec
