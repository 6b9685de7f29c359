"""Option models and the value types that specs and plugin options share.

Every plugin's options subclass :class:`PluginOptions`; a spec's keys are validated by them
before anything is built. :data:`Location` and :data:`ScheduleName` are the types to use for a
model or data location and for a learning-rate schedule, so that a plugin option accepts
exactly what the matching ``[training]`` or ``[teacher]`` key accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

#: prefix of a value that names an entry of the spec's ``[assets]`` table (resolved at run time)
ASSET_PREFIX = "asset:"


_FILE_SUFFIXES = {
    ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".bz2", ".gz", ".xz", ".zip",
    ".gguf", ".safetensors", ".wav", ".flac", ".toml",
}


def _is_local_reference(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in _FILE_SUFFIXES


def _check_location(value: str) -> str:
    """Local paths must exist; hub ids and asset references are checked when they are used."""
    if value.startswith(ASSET_PREFIX) or not _is_local_reference(value):
        return value
    if not Path(value).expanduser().exists():
        raise ValueError(f"no such file or directory: {value}")
    return value


#: A local file or directory (must exist), an ``asset:NAME[/sub/path]`` reference, or a hub id.
#: Relative paths are relative to the working directory.
Location = Annotated[str, AfterValidator(_check_location)]

#: numeric precisions of training and of teacher forwards
PrecisionName = Literal["fp32", "bf16", "fp16"]

#: the learning-rate schedules after warm-up (see :mod:`cald_framework.engine.schedules`)
ScheduleName = Literal["constant", "linear", "cosine", "exponential"]


def lacks_schedule_floor(schedule: str, min_lr_ratio: float) -> bool:
    """``True`` when ``schedule`` needs a floor above 0 and has none.

    The exponential schedule decays as ``min_lr_ratio ** progress``: with a floor of 0 the
    rate would drop to 0 at the first step after warm-up.
    """
    return schedule == "exponential" and min_lr_ratio <= 0


class PluginOptions(BaseModel):
    """Base class for every plugin's option model: unknown keys are errors, and so are infinite
    or NaN numbers (an option that means "no limit" says so with ``None``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoOptions(PluginOptions):
    """Option model for plugins that take no options."""
