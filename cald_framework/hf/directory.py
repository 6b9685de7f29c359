"""The exported model directory: everything ``from_pretrained`` and ``pipeline()`` need.

Beside ``config.json`` and the weights: the preprocessor (tokenizer, feature extractor or
processor), a generation config for causal models, the label names in the config, and the
``auto_map`` with its loader module for processes that do not import cald_framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from ..atomic import write_text_atomic
from ..modeling import CaldModel
from .registration import LOADER_MODULE, auto_map, loader_source

#: the token ids a generation config takes from the backbone config, else from the tokenizer
GENERATION_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id")


def save_student(model: CaldModel, directory: Path, preprocessor: Any) -> None:
    """Write ``model`` and ``preprocessor`` as one loadable directory.

    ``model``'s config gains its label names and ``auto_map`` (facts about the model, which
    later saves keep).
    """
    name_labels(model)
    model.config.auto_map = auto_map(model.head_spec, model.family.modality)
    model.save_pretrained(directory)
    write_text_atomic(directory / f"{LOADER_MODULE}.py", loader_source())
    preprocessor.save_pretrained(str(directory))
    if model.head_spec.kind == "causal_lm":
        generation_config(model, preprocessor).save_pretrained(str(directory))


def name_labels(model: CaldModel) -> None:
    """``id2label``/``label2id`` from the task's label names, for classification pipelines."""
    names = model.config.task_metadata.get("label_names")
    if names:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: index for index, name in enumerate(names)}


def generation_config(model: CaldModel, preprocessor: Any) -> GenerationConfig:
    """The special tokens ``generate()`` needs: the backbone's, else the tokenizer's."""
    tokens = {}
    for name in GENERATION_TOKENS:
        value = model.config.source_config.get(name)
        tokens[name] = value if value is not None else getattr(preprocessor, name, None)
    return GenerationConfig(**{name: value for name, value in tokens.items() if value is not None})
