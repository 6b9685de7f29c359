"""Registers the built-in source families, exactly as a third-party package would."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import SourcePlugin

from .bert import BertFamily
from .gpt_neox import GPTNeoXFamily
from .llama import LlamaFamily
from .wav2vec2 import Wav2Vec2Family

SOURCES = tuple(
    SourcePlugin(family.name, family, description=family.description)
    for family in (BertFamily, GPTNeoXFamily, LlamaFamily, Wav2Vec2Family)
)


@hookimpl
def cald_register_source_models(register: Callable[[SourcePlugin], None]) -> None:
    for source in SOURCES:
        register(source)
