"""The data sets this package can make on the spot, by name, for a spec's ``[assets]`` table.

An asset ``{generate = "NAME", options = {...}}`` is made the first time a run needs it and
cached under a key of its name, options and generator version, so a spec that needs synthetic
data runs with one command. Only these built-in generators can be named: a spec never runs
code of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import speech_commands


@dataclass(frozen=True)
class DataGenerator:
    """A named data set maker: ``make(out, options)`` fills the empty directory ``out``."""

    name: str
    options: type[BaseModel]
    make: Callable[[Path, Any], None]
    #: bump when the same options would make different files
    version: str
    description: str


class SpeechCommandsOptions(BaseModel):
    """The options of :func:`cald_framework.data.speech_commands.generate`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speakers: int = Field(default=6, ge=1)
    intents: int = Field(default=12, ge=1, le=len(speech_commands.INTENTS))
    per_intent: int = Field(default=4, ge=3)
    seed: int = Field(default=0, ge=0)


def _make_speech_commands(out: Path, options: SpeechCommandsOptions) -> None:
    speech_commands.generate(out, **options.model_dump(), progress=True)


GENERATORS: Mapping[str, DataGenerator] = {
    "speech-commands": DataGenerator(
        name="speech-commands",
        options=SpeechCommandsOptions,
        make=_make_speech_commands,
        version="1",
        description="spoken commands synthesised with espeak-ng and sox (intent, speaker, CTC)",
    ),
}


def generator(name: str) -> DataGenerator:
    """The generator called ``name``; the error lists the known ones."""
    try:
        return GENERATORS[name]
    except KeyError:
        known = ", ".join(sorted(GENERATORS))
        raise ValueError(f"unknown data generator {name!r}; known: {known}") from None
