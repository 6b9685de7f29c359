"""Discovers plugins through entry points and fills one registry per plugin kind.

Built-in plugins are entry points of the ``cald-framework`` distribution itself and load first;
third-party entry points follow, one at a time, each in isolation: a plugin that fails to
import, to validate against the hook specifications, or to register (a duplicate name, a
wrong record) is dropped with one warning naming its distribution, and everything else keeps
working. ``CALD_STRICT_PLUGINS=1`` turns that warning into an error.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import PROJECT, hookspecs
from .contracts import ExtractorPlugin, GuidancePlugin, MixerPlugin, SourcePlugin, TaskPlugin
from .errors import PluginError
from .registry import Provenance, Registered, Registry

ENTRY_POINT_GROUP = PROJECT
STRICT_ENV = "CALD_STRICT_PLUGINS"
_HOST_DISTRIBUTION = "cald-framework"


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be loaded; the rest of the plugins still work."""


@dataclass
class Registries:
    """Every registry, by plugin kind; field names match the spec's vocabulary."""

    sources: Registry[SourcePlugin]
    mixers: Registry[MixerPlugin]
    extractors: Registry[ExtractorPlugin]
    guidance: Registry[GuidancePlugin]
    tasks: Registry[TaskPlugin]

    def all(self) -> Iterator[tuple[str, Registered[Any]]]:
        """Every registered plugin as ``(kind, entry)``, grouped by kind."""
        for item in fields(self):
            registry: Registry[Any] = getattr(self, item.name)
            for entry in registry:
                yield registry.kind, entry


#: hook name -> (Registries field, record type, kind as users read it)
_HOOKS: dict[str, tuple[str, type, str]] = {
    "cald_register_source_models": ("sources", SourcePlugin, "source model"),
    "cald_register_mixers": ("mixers", MixerPlugin, "mixer"),
    "cald_register_extractors": ("extractors", ExtractorPlugin, "extractor"),
    "cald_register_guidance": ("guidance", GuidancePlugin, "guidance mode"),
    "cald_register_tasks": ("tasks", TaskPlugin, "task"),
}


def empty_registries() -> Registries:
    """Registries with nothing registered (the starting point of discovery, and of tests)."""
    return Registries(
        **{attr: Registry(kind, record) for attr, record, kind in _HOOKS.values()}
    )


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


def _load_order(points: list[EntryPoint]) -> list[EntryPoint]:
    """Built-ins first, then third-party plugins by distribution and entry-point name."""

    def key(entry_point: EntryPoint) -> tuple[int, str, str]:
        name = _normalise(_distribution_of(entry_point)[0])
        return (0 if name == _HOST_DISTRIBUTION else 1, name, entry_point.name)

    unique = {(ep.name, ep.value): ep for ep in points}
    return sorted(unique.values(), key=key)


class _PluginLoader:
    """Registers plugin modules one at a time into a pluggy manager and the registries."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.registries = empty_registries()

    def add_module(self, module: ModuleType, provenance: Provenance, label: str) -> None:
        """Register one module's hooks; on any failure roll back and warn (or raise if strict)."""
        try:
            self.manager.register(module, name=label)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break the host
            self.reject(provenance, label, error)
            return
        try:
            self.manager.check_pending()
            staged = self._collect(module, provenance)
        except Exception as error:  # noqa: BLE001
            self.manager.unregister(module)
            self.reject(provenance, label, error)
            return
        for attr, record, entry_provenance in staged:
            getattr(self.registries, attr).add(record, entry_provenance)

    def _collect(
        self, module: ModuleType, provenance: Provenance
    ) -> list[tuple[str, Any, Provenance]]:
        """Call each of the module's hooks, checking every record before anything is committed."""
        staged: list[tuple[str, Any, Provenance]] = []
        for hook_name, (attr, _record, _kind) in _HOOKS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                if impl.plugin is module:
                    impl.function(register=self._stager(attr, provenance, staged))
        return staged

    def _stager(
        self, attr: str, provenance: Provenance, staged: list[tuple[str, Any, Provenance]]
    ) -> Callable[[Any], None]:
        registry: Registry[Any] = getattr(self.registries, attr)
        trial = Registry(registry.kind, registry.record_type)

        def register(record: Any) -> None:
            trial.add(record, provenance)  # type and duplicate checks within this plugin
            if record.name in registry:
                registry.add(record, provenance)  # raises: the name is already taken
            staged.append((attr, record, provenance))

        return register

    def reject(self, provenance: Provenance, label: str, error: Exception) -> None:
        message = (
            f"plugin {label!r} from distribution {provenance.distribution} "
            f"{provenance.version} was not loaded: {type(error).__name__}: {error}"
        )
        if self.strict or _normalise(provenance.distribution) == _HOST_DISTRIBUTION:
            raise PluginError(message) from error
        warnings.warn(message, PluginLoadWarning, stacklevel=2)


def build_registries(strict: bool | None = None) -> Registries:
    """Discover every plugin now (no cache): built-ins first, then third-party entry points."""
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    loader = _PluginLoader(strict)
    for entry_point in _load_order(list(entry_points(group=ENTRY_POINT_GROUP))):
        distribution, version = _distribution_of(entry_point)
        provenance = Provenance(distribution, version, entry_point.value)
        label = f"{distribution}:{entry_point.name}"
        try:
            module = entry_point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break the host
            loader.reject(provenance, label, error)
            continue
        if not isinstance(module, ModuleType):
            loader.reject(
                provenance, label, TypeError(f"entry point {entry_point.value} is not a module")
            )
            continue
        loader.add_module(module, provenance, label)
    loader.manager.check_pending()
    return loader.registries


@functools.cache
def load_registries() -> Registries:
    """The registries of this process, discovered once."""
    return build_registries()
