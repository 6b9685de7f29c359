"""Exported students as Hugging Face models: Auto classes, pipelines, the directory's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from cald_testing.models import save_bert, save_gpt_neox, save_wav2vec2
from cald_tasks.ctc import CharVocabulary, ctc_processor

from cald_framework.contracts import HeadSpec
from cald_framework.errors import CheckpointError
from cald_framework.hf.directory import save_student
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.testing.text import REVIEW_WORDS, word_level_tokenizer

LABELS = ["rotten", "fresh"]
CHARACTERS = CharVocabulary(("<blank>", "<unk>", "|", "a", "b", "o", "n", "f"))

#: kind -> (source, saver, head, mixer, mixer options)
KINDS: dict[str, tuple[str, Any, HeadSpec, str, dict[str, Any]]] = {
    "text-classification": ("bert", save_bert, HeadSpec("classification", 2), "linformer", {"k": 8}),
    "text-generation": ("gpt-neox", save_gpt_neox, HeadSpec("causal_lm"), "mamba", {"d_state": 4}),
    "automatic-speech-recognition": (
        "wav2vec2",
        lambda directory: save_wav2vec2(directory),
        HeadSpec("token_classification", len(CHARACTERS.tokens)),
        "bimamba2",
        {"d_state": 8, "headdim": 8, "chunk_size": 16},
    ),
}


def export_tiny_student(root: Path, kind: str) -> Path:
    """A converted (untrained) student of ``kind`` exported as a run would export it."""
    source_name, saver, head, mixer_name, options = KINDS[kind]
    teacher_dir = root / f"{kind}-teacher"
    if source_name == "wav2vec2":
        saver(teacher_dir)
    else:
        saver(teacher_dir, word_level_tokenizer(REVIEW_WORDS))
    registries = load_registries()
    source = registries.sources.get(source_name)
    torch.manual_seed(0)
    metadata = {"label_names": LABELS} if head.kind == "classification" else {}
    student = CaldModel.from_source(
        source_name, str(teacher_dir), head, max_length=16, task_metadata=metadata, source=source
    )
    student.install_mixers(registries.mixers.get(mixer_name), options, with_projections=True)
    preprocessor = source.family().load_preprocessor(str(teacher_dir))
    if head.kind == "token_classification":
        preprocessor = ctc_processor(preprocessor, CHARACTERS)
    directory = root / kind
    save_student(student, directory, preprocessor)
    return directory


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("students")
    return {kind: export_tiny_student(root, kind) for kind in KINDS}
