"""Small plugins that let spec tests run against known registries, independent of the built-ins."""

from __future__ import annotations

from pydantic import Field

from cald_framework.contracts import (
    ExtractorPlugin,
    GuidancePlugin,
    Location,
    MixerPlugin,
    NoOptions,
    PluginOptions,
    SourceFamily,
    SourcePlugin,
    Task,
    TaskPlugin,
)
from cald_framework.plugin_manager import Registries, empty_registries
from cald_framework.registry import Provenance


class BiOptions(PluginOptions):
    k: int = Field(default=4, gt=0)


class TextTaskOptions(PluginOptions):
    dataset: Location
    data_files: Location | None = None
    max_length: int = Field(default=64, gt=0)


class HybridOptions(PluginOptions):
    T_h: int | float


class WaypointOptions(PluginOptions):
    T_w: int | None = Field(default=None, gt=0)


class ExtractorOptions(PluginOptions):
    skip_embeddings: bool = True


def _unused(*_args: object) -> None:
    raise AssertionError("spec validation must not build plugins")


# Abstract families and tasks: they state causality and modality, and cannot be built.
class _Encoder(SourceFamily):
    causal, modality = False, "text"


class _Decoder(SourceFamily):
    causal, modality = True, "text"


class _Speech(SourceFamily):
    causal, modality = False, "audio"


class _TextTask(Task):
    modality = "text"


class _AudioTask(Task):
    modality = "audio"


def spec_test_registries() -> Registries:
    registries = empty_registries()
    origin = Provenance("spec-test-plugins", "1.0", "tests.spec_plugins")
    for source in (
        SourcePlugin("enc", _Encoder),
        SourcePlugin("dec", _Decoder),
        SourcePlugin("speech", _Speech),
    ):
        registries.sources.add(source, origin)
    registries.mixers.add(MixerPlugin("bi", BiOptions, _unused, "bidirectional"), origin)
    registries.mixers.add(MixerPlugin("uni", NoOptions, _unused, "causal"), origin)
    registries.tasks.add(TaskPlugin("cls", TextTaskOptions, _TextTask), origin)
    registries.tasks.add(TaskPlugin("sid", TextTaskOptions, _AudioTask), origin)
    for mode in (
        GuidancePlugin("unguided", NoOptions, _unused),
        GuidancePlugin("target", NoOptions, _unused, needs_target_teacher=True),
        GuidancePlugin("waypoint", WaypointOptions, _unused, needs_waypoints=True, default_init="source"),
        GuidancePlugin("hybrid", HybridOptions, _unused, needs_target_teacher=True),
    ):
        registries.guidance.add(mode, origin)
    registries.extractors.add(ExtractorPlugin("hidden_states", ExtractorOptions, _unused), origin)
    return registries
