"""Reading TOML specs: parsing, the line of every key, and ``--set`` overrides."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ..errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")

Path_ = tuple[str, ...]


def _split_dotted(key: str) -> Path_:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", key)
    return tuple(part.strip("\"'") for part in parts)


def key_lines(text: str) -> dict[Path_, int]:
    """Map each table and key path to the (1-based) line where it is written."""
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(table + _split_dotted(key.group(1)), number)
    return lines


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its closest written ancestor."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        detail = _TOML_POSITION.sub("", message).strip()
        where = f"{origin}:{position.group(1)}" if position else origin
        raise SpecError(f"{where}: TOML syntax error: {detail}") from None


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a spec file; return the document and its text (for line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read spec: {error}") from None
    return parse_toml(text, str(path)), text


def parse_override(assignment: str) -> tuple[Path_, Any]:
    """``section.key=value``: the value is read as TOML where it parses, else as a string."""
    key, sep, raw = assignment.partition("=")
    path = _split_dotted(key.strip())
    if not sep or not path or not all(path):
        raise SpecError(f"--set {assignment!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_override(document: dict[str, Any], path: Path_, value: Any) -> None:
    node = document
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            dotted = ".".join(path[: depth + 1])
            raise SpecError(f"--set {'.'.join(path)}: {dotted} is a value, not a table")
        node = child
    node[path[-1]] = value
