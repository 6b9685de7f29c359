"""Registers the built-in hidden-state extractors, exactly as a third-party package would."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import ExtractorPlugin

from .extractors import HiddenStateOptions, LayerNormOptions, hidden_states, layer_normed

EXTRACTORS = (
    ExtractorPlugin(
        "hidden_states", HiddenStateOptions, hidden_states,
        description="the residual stream after each layer's feed-forward block",
    ),
    ExtractorPlugin(
        "layernorm", LayerNormOptions, layer_normed,
        description="the residual stream under a parameter-free LayerNorm",
    ),
)


@hookimpl
def cald_register_extractors(register: Callable[[ExtractorPlugin], None]) -> None:
    for extractor in EXTRACTORS:
        register(extractor)
