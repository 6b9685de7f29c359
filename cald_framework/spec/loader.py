"""Validating a spec: sections, plugin options and cross-checks, with errors that point at the line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..contracts import (
    ASSET_PREFIX,
    ExtractorPlugin,
    GuidancePlugin,
    MixerPlugin,
    PluginOptions,
    SourcePlugin,
    TaskPlugin,
)
from ..errors import PluginError, SpecError
from ..plugin_manager import Registries, load_registries
from ..validation import OptionsError, Problem, describe, size_problems, summary, validate_options
from .sections import GuidanceSection, Spec, TrainingSection
from .toml_source import Path_, apply_override, key_lines, line_of, parse_override, read_toml


@dataclass(frozen=True)
class ValidatedSpec:
    """A spec whose plugin names are resolved and whose plugin options are validated."""

    spec: Spec
    origin: str
    #: the parsed document with overrides applied, as validated (written into the run directory)
    document: dict[str, Any]
    source: SourcePlugin
    mixer: MixerPlugin
    mixer_options: PluginOptions
    task: TaskPlugin
    task_options: PluginOptions
    guidance: GuidancePlugin
    guidance_options: PluginOptions
    extractor: ExtractorPlugin
    extractor_options: PluginOptions
    #: ``[training]`` with ``[teacher.finetune]`` applied, for the teacher fine-tuning run
    teacher_training: TrainingSection

    @property
    def student_init(self) -> str:
        return self.spec.student.init or self.guidance.default_init


class _Collector:
    """Gathers problems so that one validation pass reports the first and counts the rest."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(path, message))

    def add_all(self, problems: Sequence[Problem], prefix: Path_) -> None:
        for problem in problems:
            self.add(prefix + problem.path, problem.message)


def _string_values(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_values(value, path + (str(key),))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_values(value, path + (str(index),))
    elif isinstance(node, str):
        yield path, node


def _lookup(registry: Any, name: str, path: Path_, problems: _Collector) -> Any:
    try:
        return registry.get(name)
    except PluginError as error:
        problems.add(path, str(error))
        return None


def _options(
    plugin: Any,
    values: dict[str, Any],
    path: Path_,
    problems: _Collector,
    what: str,
    inherited: Sequence[str] = (),
) -> PluginOptions | None:
    """Validate a plugin's option table; ``inherited`` are the host's keys of that table."""
    if plugin is None:
        return None
    try:
        return validate_options(plugin.options, values, f"{what} {plugin.name!r}", inherited)
    except OptionsError as error:
        problems.add_all(error.problems, path)
        return None


def _check_compatibility(
    spec: Spec,
    source: SourcePlugin | None,
    mixer: MixerPlugin | None,
    task: TaskPlugin | None,
    guidance: GuidancePlugin | None,
    registries: Registries,
    problems: _Collector,
) -> None:
    if source and mixer and source.causal and mixer.direction == "bidirectional":
        causal = [entry.plugin.name for entry in registries.mixers if entry.plugin.direction == "causal"]
        problems.add(
            ("student", "mixer"),
            f"mixer {mixer.name!r} is bidirectional and cannot replace attention in the causal "
            f"source {source.name!r}; causal mixers: {', '.join(causal) or 'none'}",
        )
    if source and task and source.modality != task.modality:
        problems.add(
            ("task", "kind"),
            f"task {task.name!r} needs {task.modality} input but source {source.name!r} "
            f"takes {source.modality}",
        )
    if guidance and guidance.needs_waypoints and spec.teacher.target and not spec.teacher.waypoints:
        problems.add(
            ("guidance", "mode"),
            f"mode {guidance.name!r} needs waypoints: set teacher.waypoints, or drop "
            "teacher.target so that run fine-tunes the teacher and saves them",
        )


def _check_assets(document: dict[str, Any], spec: Spec, problems: _Collector) -> None:
    for path, value in _string_values(document):
        if path[:1] == ("assets",) or not value.startswith(ASSET_PREFIX):
            continue
        name = value[len(ASSET_PREFIX) :].split("/", 1)[0]
        if name not in spec.assets:
            declared = ", ".join(sorted(spec.assets)) or "none"
            problems.add(path, f"unknown asset {name!r}; declared in [assets]: {declared}")


#: ``[training]`` keys about the student's conversion, which the teacher's fine-tuning does not
#: inherit (it has no new parameters); ``[teacher.finetune]`` may still set them
_STUDENT_ONLY = {"param_groups", "weight_decay_on"}


def _teacher_training(spec: Spec, problems: _Collector) -> TrainingSection | None:
    merged = {**spec.training.model_dump(exclude=_STUDENT_ONLY), **spec.teacher.finetune}
    try:
        return TrainingSection.model_validate(merged)
    except ValidationError as error:
        problems.add_all(describe(error, TrainingSection), ("teacher", "finetune"))
        return None


def validate_document(
    document: dict[str, Any], registries: Registries | None = None
) -> tuple[ValidatedSpec | None, list[Problem]]:
    """Validate a parsed spec. Returns the result or the problems found (never both)."""
    registries = registries or load_registries()
    problems = _Collector()
    try:
        spec = Spec.model_validate(document)
    except ValidationError as error:
        problems.add_all(describe(error, Spec, sections=True), ())
        return None, problems.problems

    source = _lookup(registries.sources, spec.teacher.source, ("teacher", "source"), problems)
    mixer = _lookup(registries.mixers, spec.student.mixer, ("student", "mixer"), problems)
    task = _lookup(registries.tasks, spec.task.kind, ("task", "kind"), problems)
    guidance = _lookup(registries.guidance, spec.guidance.mode, ("guidance", "mode"), problems)
    extractor = _lookup(
        registries.extractors, spec.guidance.extractor, ("guidance", "extractor"), problems
    )
    mixer_options = _options(
        mixer, spec.student.mixer_options, ("student", "mixer_options"), problems, "mixer"
    )
    task_options = _options(
        task, dict(spec.task.model_extra or {}), ("task",), problems, "task", ["kind"]
    )
    guidance_options = _options(
        guidance,
        dict(spec.guidance.model_extra or {}),
        ("guidance",),
        problems,
        "mode",
        list(GuidanceSection.model_fields),
    )
    extractor_options = _options(
        extractor,
        spec.guidance.extractor_options,
        ("guidance", "extractor_options"),
        problems,
        "extractor",
    )
    if mixer is not None and mixer_options is not None and task_options is not None:
        max_length = spec.student.max_length or getattr(task_options, "max_length", None)
        sizes = size_problems(mixer, mixer_options, max_length)
        problems.add_all(sizes, ("student", "mixer_options"))
    _check_compatibility(spec, source, mixer, task, guidance, registries, problems)
    _check_assets(document, spec, problems)
    teacher_training = _teacher_training(spec, problems)
    if problems.problems:
        return None, problems.problems
    return (
        ValidatedSpec(
            spec=spec,
            origin="",
            document=document,
            source=source,
            mixer=mixer,
            mixer_options=mixer_options,
            task=task,
            task_options=task_options,
            guidance=guidance,
            guidance_options=guidance_options,
            extractor=extractor,
            extractor_options=extractor_options,
            teacher_training=teacher_training,
        ),
        [],
    )


def _format(
    problems: list[Problem], origin: str, lines: dict[Path_, int], overridden: list[Path_]
) -> str:
    first = problems[0]
    override = next((key for key in overridden if first.path[: len(key)] == key), None)
    if override is not None:
        where = f"{origin} (--set {'.'.join(override)})"
    else:
        line = line_of(lines, first.path)
        where = f"{origin}:{line}" if line else origin
    return f"{where}: {summary(problems, '(spec)')}"


def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    registries: Registries | None = None,
) -> ValidatedSpec:
    """Read, override and validate a spec file; raise :class:`SpecError` with a one-line message."""
    path = Path(path)
    document, text = read_toml(path)
    overridden: list[Path_] = []
    for assignment in overrides:
        key, value = parse_override(assignment)
        apply_override(document, key, value)
        overridden.append(key)
    validated, problems = validate_document(document, registries)
    if problems:
        raise SpecError(_format(problems, str(path), key_lines(text), overridden))
    assert validated is not None
    return replace(validated, origin=str(path))
