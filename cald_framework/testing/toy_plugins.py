"""Toy plugins: registries whose names and options are known, independent of the built-ins.

Spec validation runs against them (with :data:`TOY_SPEC`, a valid spec naming them), so its
errors can be checked to the character without depending on which plugins are installed. They
only validate: building any of them fails.
"""

from __future__ import annotations

from pydantic import Field

from ..contracts import (
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
from ..plugin_manager import Registries, empty_registries
from ..registry import Provenance


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


#: a valid spec naming toy plugins; its data file is ``./data.csv``
TOY_SPEC = """\
[experiment]
name = "t"
output_dir = "out/{name}"

[teacher]
source = "enc"
model = "org/model"

[student]
mixer = "bi"

[student.mixer_options]
k = 8

[task]
kind = "cls"
dataset = "csv"
data_files = "./data.csv"
max_length = 32

[guidance]
mode = "target"
alpha_ld = 1.0

[training]
lr = 1e-4
batch_size = 4
"""
#: the rows of ``./data.csv``, which :data:`TOY_SPEC` names
TOY_DATA = "text,label\na,1\n"


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


def toy_registries() -> Registries:
    """Registries holding only the toy plugins."""
    registries = empty_registries()
    origin = Provenance("toy-plugins", "1.0", __name__)
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
