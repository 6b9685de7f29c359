"""One wording for what pydantic finds wrong, for spec sections and plugin options alike.

A problem is a path below the validated table and a message in the spec's words: an unknown key
lists the allowed ones, a missing one is "required". Plugin options are validated here and only
here, whether they come from a spec or from a call such as ``convert(..., {"k": 64})``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .contracts import MixerPlugin, PluginOptions
from .errors import PluginError


@dataclass(frozen=True)
class Problem:
    """One thing wrong at ``path`` (keys below the validated table)."""

    path: tuple[str, ...]
    message: str


def summary(problems: Sequence[Problem], whole: str) -> str:
    """The first problem and how many more: ``k: ... (and 2 more)``; ``whole`` names the empty
    path (the validated table itself)."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{'.'.join(first.path) or whole}: {first.message}{more}"


class OptionsError(PluginError):
    """A plugin's options do not validate; the message is their :func:`summary`."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__(summary(self.problems, "(options)"))


def describe(
    error: ValidationError,
    model: type[BaseModel],
    *,
    inherited: Sequence[str] = (),
    sections: bool = False,
) -> list[Problem]:
    """The problems of ``error``, raised validating ``model``.

    ``inherited`` are keys of the same table that the host reads (offered with the model's own
    when a top-level key is unknown); ``sections`` says the model's keys are spec sections.
    """
    problems = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        offered = inherited if len(loc) == 1 else ()
        problems.append(Problem(loc, _message(item, model, loc, offered, sections)))
    return problems


def validate_options(
    model: type[PluginOptions],
    values: Mapping[str, Any],
    owner: str,
    inherited: Sequence[str] = (),
) -> PluginOptions:
    """``values`` as a plugin's option ``model``, or :class:`OptionsError` whose every problem
    ends with the ``owner`` that refused it, e.g. ``(mixer 'some-mixer')``."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        problems = describe(error, model, inherited=inherited)
        raise OptionsError([Problem(p.path, f"{p.message} ({owner})") for p in problems]) from None


def size_problems(
    plugin: MixerPlugin, options: PluginOptions, max_length: int | None
) -> list[Problem]:
    """What the mixer's :attr:`~cald_framework.contracts.MixerPlugin.limits` refuses at
    ``max_length``, each problem ending with the mixer that refused it."""
    if plugin.limits is None:
        return []
    refused = plugin.limits(options, max_length)
    return [Problem((key,), f"{reason} (mixer {plugin.name!r})") for key, reason in refused.items()]


def _message(
    item: Any, model: type[BaseModel], loc: tuple[str, ...], inherited: Sequence[str], sections: bool
) -> str:
    kind = item["type"]
    what = "section" if sections and len(loc) == 1 else "key"
    if kind == "extra_forbidden":
        allowed = sorted({*_allowed_keys(model, loc[:-1]), *inherited})
        expected = f"expected one of: {', '.join(allowed)}" if allowed else "it takes no options"
        return f"unknown {what} {loc[-1]!r}; {expected}"
    if kind == "missing":
        return f"required {what} is missing"
    if kind == "value_error":
        return item["msg"].removeprefix("Value error, ")
    return f"{item['msg']} (got {item['input']!r})"


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The field names of the model found by walking ``loc`` down from ``model``."""
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        current = _model_in(field.annotation)
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return sorted(current.model_fields)


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
