"""JSON Schema of the spec, with the option schemas of every registered plugin, for editors."""

from __future__ import annotations

from typing import Any

from ..plugin_manager import Registries, load_registries
from .sections import Spec

#: spec location of each plugin kind's options -> Registries field
_PLUGIN_OPTION_TABLES = {
    "student.mixer_options": "mixers",
    "task": "tasks",
    "guidance": "guidance",
    "guidance.extractor_options": "extractors",
    "teacher.source": "sources",
}


def spec_json_schema(registries: Registries | None = None) -> dict[str, Any]:
    """The spec's schema; ``x-cald-plugins`` lists each registered plugin's option schema."""
    registries = registries or load_registries()
    schema = Spec.model_json_schema()
    plugins: dict[str, Any] = {}
    for table, attr in _PLUGIN_OPTION_TABLES.items():
        registry = getattr(registries, attr)
        plugins[table] = {
            entry.plugin.name: (
                entry.plugin.options.model_json_schema() if hasattr(entry.plugin, "options") else {}
            )
            for entry in registry
        }
    schema["x-cald-plugins"] = plugins
    return schema
