"""Registers the built-in source families."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import SourcePlugin

from .bert import BertFamily
from .gpt_neox import GPTNeoXFamily
from .llama import LlamaFamily
from .wav2vec2 import Wav2Vec2Family

FAMILIES = (BertFamily, GPTNeoXFamily, LlamaFamily, Wav2Vec2Family)


@hookimpl
def cald_register_source_models(register: Callable[[SourcePlugin], None]) -> None:
    for family in FAMILIES:
        register(SourcePlugin(name=family.name, family=family, description=family.description))
