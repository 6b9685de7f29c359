"""The model card: ``README.md`` in the exported student directory, what the Hub shows.

Hub metadata front matter (library, tags, pipeline tag, base model), then where the student
came from (source model, mixer and options, guidance mode, data), teacher and student metrics
from ``results.json``, the spec that made it, and the versions it was made with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from ..atomic import write_text_atomic
from ..contracts import HeadSpec, Modality
from ..modeling import CaldConfig
from .registration import LOADER_MODULE

CARD_FILE = "README.md"
#: the Hub tags of every student; its mixer and task are added
TAGS = ("cald", "cald-framework", "distillation", "linear-complexity")

#: a Hub repository id (``owner/name``); anything else is a local path, not a base model
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def pipeline_tag(head: HeadSpec, modality: Modality) -> str:
    """The Hub's pipeline tag for a model with ``head`` on ``modality`` inputs."""
    if head.kind == "causal_lm":
        return "text-generation"
    if head.kind == "token_classification":
        return "automatic-speech-recognition" if modality == "audio" else "token-classification"
    return f"{modality}-classification"


def base_model(source_model: str | None) -> str | None:
    """``source_model`` when it names a Hub repository that is not also a local path."""
    if source_model and _HUB_ID.match(source_model) and not Path(source_model).exists():
        return source_model
    return None


def front_matter(config: CaldConfig, modality: Modality, task: str) -> str:
    """The YAML metadata block the Hub reads."""
    data = ModelCardData(
        library_name="transformers",
        tags=[*TAGS, str(config.mixer), task],
        pipeline_tag=pipeline_tag(config.head_spec, modality),
        base_model=base_model(config.source_model),
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def metrics_table(results: Mapping[str, Any]) -> list[str]:
    """Teacher, student after conversion and trained student, one row per metric."""
    columns = {
        "teacher": results["teacher_metrics"],
        "student after conversion": results["initial_student_metrics"],
        "student": results["student_metrics"],
    }
    names = sorted(set().union(*columns.values()))
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(_metric(values.get(name)) for values in columns.values()) + " |"
        for name in names
    ]
    lines.append(
        f"| parameters | {results['teacher_parameters']:,} | | {results['student_parameters']:,} |"
    )
    return lines


def render_model_card(
    results: Mapping[str, Any],
    config: CaldConfig,
    modality: Modality,
    task_section: Mapping[str, Any],
    spec_text: str,
) -> str:
    """The card's Markdown: ``results`` is ``results.json``'s document, ``config`` the
    student's, ``task_section`` the spec's ``[task]`` and ``spec_text`` the whole spec."""
    data = ", ".join(
        f"{key} `{task_section[key]}`" for key in ("dataset", "data_files") if key in task_section
    )
    kept = config.kept_attention
    options = json.dumps(config.mixer_options, sort_keys=True)
    versions = ", ".join(f"{name} {version}" for name, version in results["versions"].items())
    lines = [
        f"# {results['experiment']}",
        "",
        f"A linear-complexity student of `{config.source_model}` ({results['source']} family): "
        f"attention replaced by the `{results['mixer']}` mixer and distilled with "
        "Cross-Architecture Layerwise Distillation (cald-framework).",
        "",
        f"- mixer: `{results['mixer']}`, options `{options}`",
        f"- kept attention layers: {', '.join(map(str, kept)) if kept else 'none'}",
        f"- guidance mode: `{results['mode']}`, student initialised from the "
        f"{results['student_init']} weights, {results['steps']} training steps",
        f"- task: `{results['task']}`" + (f", data: {data}" if data else ""),
        "",
        f"## Metrics (primary: {results['primary_metric']})",
        "",
        *metrics_table(results),
        "",
        "## Loading",
        "",
        "```python",
        "import cald_framework  # registers the CALD classes with transformers' Auto classes",
        "from transformers import pipeline",
        "",
        f'model = pipeline("{pipeline_tag(config.head_spec, modality)}", model="path/to/student")',
        "```",
        "",
        "Without `import cald_framework`, pass `trust_remote_code=True`: the directory's "
        f"`{LOADER_MODULE}.py` only imports the installed cald-framework package.",
        "",
        "## Spec",
        "",
        "```toml",
        spec_text.rstrip("\n"),
        "```",
        "",
        f"Versions: {versions}.",
        "",
    ]
    return front_matter(config, modality, results["task"]) + "\n".join(lines)


def write_model_card(directory: Path, card: str) -> Path:
    """Write ``card`` as the directory's ``README.md`` (atomically); returns its path."""
    path = directory / CARD_FILE
    write_text_atomic(path, card)
    return path
