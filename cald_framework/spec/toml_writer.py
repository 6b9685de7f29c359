"""Writing a spec document back to TOML, so that a run directory holds the exact spec it ran."""

from __future__ import annotations

import json
import math
from typing import Any


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _table(path: list[str], body: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in body.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        out.append(f"[{'.'.join(_key(part) for part in path)}]")
    out.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    if path and (scalars or not tables):
        out.append("")
    for key, value in tables.items():
        _table(path + [key], value, out)


def dumps(document: dict[str, Any]) -> str:
    """TOML text for ``document`` (tables as ``[a.b]`` headers, values inline)."""
    lines: list[str] = []
    _table([], document, lines)
    return "\n".join(lines).rstrip() + "\n"
