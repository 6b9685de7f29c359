"""Registers the built-in mixers exactly as a third-party package would (entry point ``mixers``)."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import MixerPlugin

from .bimamba2 import BiMamba2Mixer, BiMamba2Options
from .linformer import LinformerMixer, LinformerOptions
from .mamba import MambaMixer, MambaOptions
from .mamba2 import Mamba2Mixer, Mamba2Options


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
    register(
        MixerPlugin(
            name="mamba2",
            options=Mamba2Options,
            build=Mamba2Mixer,
            direction="causal",
            description="Mamba2 (SSD) block with a gated RMSNorm, Mamba2's initialisation",
        )
    )
    register(
        MixerPlugin(
            name="bimamba2",
            options=BiMamba2Options,
            build=BiMamba2Mixer,
            direction="bidirectional",
            description="forward + backward Mamba2 (expand 1) over each sequence's valid part",
        )
    )
