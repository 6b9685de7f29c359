"""Registers the built-in hidden-state extractors."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import ExtractorPlugin

from .extractors import HiddenStateOptions, LayerNormOptions, hidden_states, layer_normed


@hookimpl
def cald_register_extractors(register: Callable[[ExtractorPlugin], None]) -> None:
    register(
        ExtractorPlugin(
            name="hidden_states",
            options=HiddenStateOptions,
            build=hidden_states,
            description="the residual stream after each layer's feed-forward block",
        )
    )
    register(
        ExtractorPlugin(
            name="layernorm",
            options=LayerNormOptions,
            build=layer_normed,
            description="the residual stream under a parameter-free LayerNorm",
        )
    )
