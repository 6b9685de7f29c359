"""The plugin module named by the ``cald_framework`` entry point: one hook, one mixer."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import MixerPlugin

from .retention import RetentionMixer, RetentionOptions


@hookimpl
def cald_register_mixers(register: Callable[[MixerPlugin], None]) -> None:
    register(
        MixerPlugin(
            name="retention",
            options=RetentionOptions,
            build=RetentionMixer,
            direction="causal",
            description="RetNet multi-scale retention (chunkwise for training, recurrent steps)",
        )
    )
