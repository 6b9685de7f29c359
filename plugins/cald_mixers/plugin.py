"""Registers the built-in mixers, exactly as a third-party package would."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import MixerPlugin

from .bimamba2 import BiMamba2Mixer, BiMamba2Options
from .linformer import LinformerMixer, LinformerOptions, linformer_limits
from .mamba import MambaMixer, MambaOptions
from .mamba2 import Mamba2Mixer, Mamba2Options

MIXERS = (
    MixerPlugin(
        "linformer", LinformerOptions, LinformerMixer, "bidirectional",
        description="Linformer attention: keys/values projected to rank k along the sequence",
        limits=linformer_limits,
    ),
    MixerPlugin(
        "mamba", MambaOptions, MambaMixer, "causal",
        description="Mamba-1 selective state-space block with Mamba's initialisation",
    ),
    MixerPlugin(
        "mamba2", Mamba2Options, Mamba2Mixer, "causal",
        description="Mamba2 (SSD) block with a gated RMSNorm, Mamba2's initialisation",
    ),
    MixerPlugin(
        "bimamba2", BiMamba2Options, BiMamba2Mixer, "bidirectional",
        description="forward + backward Mamba2 (expand 1) over each sequence's valid part",
    ),
)


@hookimpl
def cald_register_mixers(register: Callable[[MixerPlugin], None]) -> None:
    for mixer in MIXERS:
        register(mixer)
