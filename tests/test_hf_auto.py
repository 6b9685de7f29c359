"""Exported students as Hugging Face models: Auto classes, pipelines, the directory's files."""

from __future__ import annotations

import os
import subprocess
import sys
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

#: pipeline task -> (source, head, mixer, mixer options)
KINDS: dict[str, tuple[str, HeadSpec, str, dict[str, Any]]] = {
    "text-classification": ("bert", HeadSpec("classification", 2), "linformer", {"k": 8}),
    "text-generation": ("gpt-neox", HeadSpec("causal_lm"), "mamba", {"d_state": 4}),
    "automatic-speech-recognition": (
        "wav2vec2",
        HeadSpec("token_classification", len(CHARACTERS.tokens)),
        "bimamba2",
        {"d_state": 8, "headdim": 8, "chunk_size": 16},
    ),
}


def save_teacher(directory: Path, source_name: str) -> None:
    """A tiny pretrained model of the family, with its tokenizer or feature extractor."""
    if source_name == "wav2vec2":
        save_wav2vec2(directory)
    else:
        saver = save_bert if source_name == "bert" else save_gpt_neox
        saver(directory, word_level_tokenizer(REVIEW_WORDS))


def export_tiny_student(root: Path, kind: str) -> Path:
    """A converted (untrained) student of ``kind`` exported as a run would export it."""
    source_name, head, mixer_name, options = KINDS[kind]
    teacher_dir = root / f"{kind}-teacher"
    save_teacher(teacher_dir, source_name)
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


def model_inputs(directory: Path, kind: str) -> dict[str, torch.Tensor]:
    """A padded batch of two, made by the directory's own preprocessor."""
    if kind == "automatic-speech-recognition":
        extractor = transformers.AutoFeatureExtractor.from_pretrained(directory)
        clips = [np.sin(np.arange(n) / 7).astype(np.float32) for n in (900, 600)]
        return dict(extractor(clips, sampling_rate=16_000, padding=True, return_tensors="pt"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    texts = ["the film was great fun", "dull plot"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


AUTO_CLASSES = {
    "text-classification": transformers.AutoModelForSequenceClassification,
    "text-generation": transformers.AutoModelForCausalLM,
    "automatic-speech-recognition": transformers.AutoModelForCTC,
}


@pytest.mark.parametrize("kind", KINDS)
def test_auto_classes_reproduce_the_framework_forward(
    students: dict[str, Path], kind: str
) -> None:
    directory = students[kind]
    inputs = model_inputs(directory, kind)
    expected = CaldModel.from_pretrained(directory)(**inputs).logits
    task_model = AUTO_CLASSES[kind].from_pretrained(directory)
    bare = transformers.AutoModel.from_pretrained(directory)
    config = transformers.AutoConfig.from_pretrained(directory)
    assert config.to_dict() == task_model.config.to_dict()
    with torch.no_grad():
        assert torch.equal(task_model(**inputs).logits, expected)
        assert torch.equal(bare(**inputs).logits, expected)


def test_audio_classification_auto_class(tmp_path: Path) -> None:
    """An audio classifier is an AutoModelForAudioClassification, not a text classifier."""
    source = load_registries().sources.get("wav2vec2")
    teacher = str(tmp_path / "teacher")
    save_teacher(tmp_path / "teacher", "wav2vec2")
    head = HeadSpec("classification", 2)
    labels = {"label_names": LABELS}
    student = CaldModel.from_source("wav2vec2", teacher, head, task_metadata=labels, source=source)
    save_student(student, tmp_path / "student", source.family().load_preprocessor(teacher))
    inputs = model_inputs(tmp_path / "student", "automatic-speech-recognition")
    model = transformers.AutoModelForAudioClassification.from_pretrained(tmp_path / "student")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, student(**inputs).logits)
    assert model.config.id2label == {0: "rotten", 1: "fresh"}


def test_text_classification_pipeline(students: dict[str, Path]) -> None:
    directory = students["text-classification"]
    classify = transformers.pipeline("text-classification", model=str(directory))
    inputs = model_inputs(directory, "text-classification")
    probabilities = CaldModel.from_pretrained(directory)(**inputs).logits.softmax(-1)
    found = classify(["the film was great fun", "dull plot"])
    best = probabilities.max(-1)
    assert [row["label"] for row in found] == [LABELS[index] for index in best.indices.tolist()]
    assert [row["score"] for row in found] == pytest.approx(best.values.tolist(), abs=1e-6)


def test_text_generation_pipeline_is_greedy_decoding(students: dict[str, Path]) -> None:
    directory = students["text-generation"]
    generate = transformers.pipeline("text-generation", model=str(directory))
    tokenizer = generate.tokenizer
    model = CaldModel.from_pretrained(directory)
    ids = tokenizer("the film was", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(4):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    found = generate("the film was", max_new_tokens=4, do_sample=False, return_tensors=True)
    assert found[0]["generated_token_ids"] == ids[0].tolist()


def test_speech_recognition_pipeline_decodes_ctc(students: dict[str, Path]) -> None:
    directory = students["automatic-speech-recognition"]
    recognize = transformers.pipeline("automatic-speech-recognition", model=str(directory))
    clip = np.sin(np.arange(900) / 7).astype(np.float32)
    inputs = model_inputs(directory, "automatic-speech-recognition")
    frames = CaldModel.from_pretrained(directory)(**inputs).logits[0].argmax(-1)
    processor = transformers.AutoProcessor.from_pretrained(directory)
    assert recognize(clip)["text"] == processor.decode(frames)
    assert processor.tokenizer.get_vocab() == CHARACTERS.ids
    # blanks split repeats, repeats collapse, "|" separates words: the task's own decoding
    frame_ids = [0, 3, 3, 0, 3, 2, 2, 4, 0, 4, 5, 0]
    assert processor.decode(frame_ids) == CHARACTERS.decode(frame_ids) == "aa bbo"


def test_exported_directory_is_complete(students: dict[str, Path]) -> None:
    classifier = transformers.AutoConfig.from_pretrained(students["text-classification"])
    assert classifier.id2label == {0: "rotten", 1: "fresh"}
    assert classifier.label2id == {"rotten": 0, "fresh": 1}
    assert classifier.auto_map == {
        "AutoConfig": "cald_loader.CaldConfig",
        "AutoModel": "cald_loader.CaldModel",
        "AutoModelForSequenceClassification": "cald_loader.CaldForSequenceClassification",
    }
    causal = students["text-generation"]
    generation = transformers.GenerationConfig.from_pretrained(causal)
    tokenizer = transformers.AutoTokenizer.from_pretrained(causal)
    assert (generation.eos_token_id, generation.pad_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    loaded = transformers.AutoModelForCausalLM.from_pretrained(causal)
    assert loaded.generation_config.eos_token_id == tokenizer.eos_token_id
    assert not (students["text-classification"] / "generation_config.json").exists()


def test_a_head_loads_only_with_its_own_auto_class(students: dict[str, Path]) -> None:
    expected = "has a classification head; load it with AutoModelForSequenceClassification"
    with pytest.raises(CheckpointError, match=expected):
        transformers.AutoModelForCausalLM.from_pretrained(students["text-classification"])


def test_loading_options_it_cannot_honour_are_refused(students: dict[str, Path]) -> None:
    directory = students["text-classification"]
    load = transformers.AutoModelForSequenceClassification.from_pretrained
    with pytest.raises(CheckpointError, match="cannot be loaded with device_map"):
        load(directory, device_map="auto")
    model = load(directory, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64


#: a process that never imports cald_framework: stock transformers and the exported directory
STOCK_LOADER = """
import sys
import transformers
directory = sys.argv[1]
try:
    transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False)
except ValueError:
    print("refused without trust_remote_code")
print("imported before loading:", "cald_framework" in sys.modules)
model = transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)
print("loaded", type(model).__module__, type(model).__name__)
"""


def test_a_process_without_cald_framework_imports_loads_through_auto_map(
    students: dict[str, Path], tmp_path: Path
) -> None:
    """Transformers runs only module files in the model directory, and only when trusted: the
    exported loader module imports the installed package, so nothing is downloaded."""
    result = subprocess.run(
        [sys.executable, "-c", STOCK_LOADER, str(students["text-generation"])],
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "refused without trust_remote_code",
        "imported before loading: False",
        "loaded cald_framework.modeling CaldForCausalLM",
    ]
