"""Name registries, one per plugin kind, that remember which distribution provided each name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .errors import PluginError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


@dataclass(frozen=True)
class Provenance:
    """Where a registered plugin came from."""

    distribution: str
    version: str
    module: str


@dataclass(frozen=True)
class Registered(Generic[T]):
    plugin: T
    provenance: Provenance


class Registry(Generic[T]):
    """Plugins of one kind, by name. Duplicate names are refused; unknown names list the known ones."""

    def __init__(self, kind: str, record_type: type[T]):
        self.kind = kind
        self.record_type = record_type
        self._entries: dict[str, Registered[T]] = {}

    def add(self, plugin: T, provenance: Provenance) -> None:
        if not isinstance(plugin, self.record_type):
            raise PluginError(
                f"{provenance.distribution} ({provenance.module}) registered a "
                f"{type(plugin).__name__} as a {self.kind}; expected {self.record_type.__name__}"
            )
        existing = self._entries.get(plugin.name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {plugin.name!r} from {provenance.distribution} ({provenance.module}) "
                f"is already registered by {existing.provenance.distribution} "
                f"({existing.provenance.module})"
            )
        self._entries[plugin.name] = Registered(plugin, provenance)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].plugin
        except KeyError:
            raise PluginError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}"
            ) from None

    def provenance(self, name: str) -> Provenance:
        self.get(name)
        return self._entries[name].provenance

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registered[T]]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)
