"""Hook specifications: the five ways a package extends cald-framework.

Each hook receives a ``register`` callback and calls it once per thing it provides, with the
matching record from :mod:`cald_framework.contracts`. A callback (rather than a return value)
lets the host attach the providing distribution and version to each name, and reject a
duplicate name at the exact place it is registered.

The hooks are called once, when the plugin manager is built (before any spec is validated),
in load order: built-in plugins first, then third-party entry points one at a time.

A plugin module implements them like this::

    from cald_framework import hookimpl
    from cald_framework.contracts import MixerPlugin

    @hookimpl
    def cald_register_mixers(register):
        register(MixerPlugin(name="my-mixer", options=MyOptions, build=MyMixer, direction="causal"))
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from . import PROJECT
from .contracts import ExtractorPlugin, GuidancePlugin, MixerPlugin, SourcePlugin, TaskPlugin

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def cald_register_source_models(register: Callable[[SourcePlugin], None]) -> None:
    """Register model families that can be converted.

    A family knows how to load a pretrained model (hub id or local directory), where its
    attention modules are, how to wire a mixer in their place, which hidden states it exposes,
    and how its parameters transfer to the student. Called once at start-up.
    """


@hookspec
def cald_register_mixers(register: Callable[[MixerPlugin], None]) -> None:
    """Register sequence mixers that replace attention.

    A mixer declares its option model (validated from ``[student.mixer_options]``), whether it
    is causal or bidirectional (a bidirectional mixer is refused for a causal source), and how
    it is built from the attention slot it fills. Called once at start-up.
    """


@hookspec
def cald_register_extractors(register: Callable[[ExtractorPlugin], None]) -> None:
    """Register hidden-state extractors: which layers are distilled and how they are normalised.

    Named by ``guidance.extractor`` in a spec. Called once at start-up.
    """


@hookspec
def cald_register_guidance(register: Callable[[GuidancePlugin], None]) -> None:
    """Register guidance schedules: which teacher gives targets at each step, and with what weights.

    Named by ``guidance.mode`` in a spec; the five modes of the paper are built-in registrations.
    Called once at start-up.
    """


@hookspec
def cald_register_tasks(register: Callable[[TaskPlugin], None]) -> None:
    """Register tasks: how they load and encode data, their model head, task loss and metrics.

    Named by ``task.kind`` in a spec. Called once at start-up.
    """
