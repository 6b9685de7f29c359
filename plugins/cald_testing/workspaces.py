"""Tiny offline work directories that real runs and spec validation use; nothing is downloaded.

The review workspace is a 2-layer BERT, a word tokenizer, a review table and a spec; a run on
it takes seconds on a CPU. The CI workspace is the ``tiny/`` folder that the CI specs
(``specs/ci/*.toml``) name by relative paths: a BERT and a GPT-NeoX sharing a word tokenizer, a
wav2vec2, reviews, a text corpus and tone "commands" with a SLURP-like manifest.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cald_framework.layout import SPEC_FILE
from cald_framework.spec.toml_writer import dumps
from cald_framework.testing.audio import write_tone
from cald_framework.testing.text import (
    REVIEW_WORDS,
    word_level_tokenizer,
    write_corpus,
    write_reviews,
)

from .models import save_bert, save_gpt_neox, save_wav2vec2

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

#: speaker -> the pitch (Hz) of the tones it "says"
SPEAKERS = {"ann": 220.0, "bob": 330.0}
#: intent -> (scenario, action, transcript)
INTENTS = {
    "lights_on": ("lights", "on", "lights on"),
    "lights_off": ("lights", "off", "lights off"),
    "music_play": ("music", "play", "play music"),
    "music_stop": ("music", "stop", "stop music"),
}
#: how often each speaker says each intent, and in which split
TAKES = ("train", "train", "validation")
RATE = 16_000


def write_bert(
    directory: Path, *, hidden_size: int = 16, extra_vocab: int = 0, dropout: float = 0.1
) -> None:
    """A randomly initialised 2-layer BERT and a word tokenizer of the review words.

    ``extra_vocab`` gives the tokenizer that many words more than the model has embeddings.
    """
    extra = [f"extra{index}" for index in range(extra_vocab)]
    tokenizer = word_level_tokenizer(REVIEW_WORDS + extra)
    save_bert(
        directory, tokenizer, hidden_size=hidden_size, extra_vocab=extra_vocab, dropout=dropout
    )


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


def write_review_files(root: Path, *, dropout: float = 0.1) -> None:
    """The workspace's model (:data:`MODEL_DIR`) and data (:data:`DATA_FILE`) in ``root``, for
    specs of a test's own."""
    root.mkdir(parents=True, exist_ok=True)
    write_bert(root / MODEL_DIR, dropout=dropout)
    write_reviews(root / DATA_FILE)


def build_review_workspace(
    root: Path, changes: Mapping[str, Any] | None = None, *, dropout: float = 0.1
) -> Path:
    """Write the model, the data and the spec (:func:`spec_with` ``changes``) into ``root``.

    Returns the spec's path; its paths are relative: run it with ``root`` as working directory.
    """
    write_review_files(root, dropout=dropout)
    spec = root / SPEC_FILE
    spec.write_text(dumps(spec_with(changes or {})))
    return spec


def _write_tone_commands(folder: Path) -> None:
    """Tones whose pitch depends on the speaker and the intent, with a SLURP-like manifest."""
    rows = []
    for speaker, pitch in SPEAKERS.items():
        for index, (intent, (scenario, action, transcript)) in enumerate(INTENTS.items()):
            for take, split in enumerate(TAKES):
                path = f"audio/{speaker}/{intent}_{take}.wav"
                seconds = 0.15 + 0.05 * take
                write_tone(folder / path, pitch + 60.0 * index, seconds, RATE)
                rows.append([path, speaker, scenario, action, intent, transcript, split])
    with (folder / "manifest.csv").open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["path", "speaker", "scenario", "action", "intent", "transcript", "split"])
        writer.writerows(rows)


def build_ci_workspace(root: Path) -> Path:
    """Write ``root/tiny/`` (models and data that the CI specs name) and return ``root``."""
    tiny = root / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    write_reviews(tiny / "reviews.csv", rows=48)
    write_corpus(tiny / "corpus.txt")
    _write_tone_commands(tiny / "speech")
    tokenizer = word_level_tokenizer(REVIEW_WORDS)
    save_bert(tiny / "bert", tokenizer, max_positions=64)
    save_gpt_neox(tiny / "gpt-neox", tokenizer, max_positions=64)
    save_wav2vec2(tiny / "wav2vec2")
    return root
