"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class CaldError(Exception):
    """An error caused by the user's input (spec, data, checkpoint, plugin), not by a bug."""


class SpecError(CaldError):
    """A spec that cannot be parsed or validated."""


class PluginError(CaldError):
    """A plugin that is unknown, broken or registered twice."""


class CheckpointError(CaldError):
    """A checkpoint or waypoint that is missing, corrupted or does not match."""


class DataError(CaldError):
    """A dataset, file or row that cannot be used."""
