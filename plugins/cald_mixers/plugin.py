"""Registers the built-in mixers exactly as a third-party package would (entry point ``mixers``)."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import MixerPlugin

from .linformer import LinformerMixer, LinformerOptions
from .mamba import MambaMixer, MambaOptions


@hookimpl
def cald_register_mixers(register: Callable[[MixerPlugin], None]) -> None:
    register(
        MixerPlugin(
            name="linformer",
            options=LinformerOptions,
            build=LinformerMixer,
            direction="bidirectional",
            description="Linformer attention: keys/values projected to rank k along the sequence",
        )
    )
    register(
        MixerPlugin(
            name="mamba",
            options=MambaOptions,
            build=MambaMixer,
            direction="causal",
            description="Mamba-1 selective state-space block with Mamba's initialisation",
        )
    )
