"""The run context: what every stage of a run needs, prepared once from the validated spec.

The pipeline and the analyses both build it with :meth:`RunContext.from_spec`, so an analysis
sees the task, its data and the pretrained teacher exactly as the run that it reads saw them.
Preparing writes nothing; the pipeline records the spec in the run directory itself
(:func:`prepare`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from ..assets import resolve_references
from ..atomic import write_text_atomic
from ..consistency import check_positions, check_vocabulary
from ..errors import SpecError
from ..contracts import Extractor, HeadSpec, PluginOptions, Task, TaskData
from ..engine.losses import LossConfig
from ..layout import SPEC_FILE
from ..modeling import CaldModel, check_kept_layers
from ..spec import Spec, ValidatedSpec
from ..spec.toml_writer import dumps
from ..validation import validate_options


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random initialisations (task heads, mixers) drawn from the spec's seed alone.

    torch seeds itself differently in every process, so without this a run would not repeat,
    and a resumed run would build a different student than the interrupted one.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def processes() -> PartialState:
    """This process's place in a multi-process run (``torchrun``, ``accelerate launch``).

    ``cpu`` as the trainer's accelerator sets it: the first state made fixes it for the whole
    process, and on a CPU-only machine it is what joins the processes into one group.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def read_model_config(model: str) -> dict[str, Any]:
    """The ``config.json`` of a model directory, for ``teacher.init = "random"``."""
    path = Path(model) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            f"teacher.init = 'random' needs teacher.model to be a directory with a config.json; "
            f"none at {path}"
        ) from None
    except json.JSONDecodeError as error:
        raise SpecError(f"teacher.model: {path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise SpecError(f"teacher.model: {path} holds {type(config).__name__}, expected an object")
    return config


def resolve_assets(validated: ValidatedSpec, value: Any) -> Any:
    """``value`` with the spec's ``[assets]`` references replaced by their locations."""
    return resolve_references(value, validated.spec.assets) if value is not None else None


@dataclass
class RunContext:
    """A spec resolved to what the stages of its run use: locations, the task and its data."""

    validated: ValidatedSpec
    output_dir: Path
    #: ``teacher.model`` with assets resolved: where the pretrained teacher is
    teacher_model: str
    task: Task
    task_options: PluginOptions
    preprocessor: Any
    data: TaskData
    #: ``student.max_length``, else the task's; ``None`` when neither sets one
    max_length: int | None

    @classmethod
    def from_spec(cls, validated: ValidatedSpec) -> RunContext:
        """Resolve the assets, build the task and its data; load no model and write nothing."""
        spec = validated.spec
        teacher_model = resolve_assets(validated, spec.teacher.model)
        options_data = resolve_assets(
            validated, validated.task_options.model_dump(exclude_unset=True)
        )
        task_options = validate_options(
            validated.task.options, options_data, f"task {spec.task.kind!r}"
        )
        task = validated.task.build(task_options)
        preprocessor = validated.source.family().load_preprocessor(teacher_model)
        with processes().main_process_first():  # the others then read the main process's cache
            data = task.build_data(preprocessor, spec.experiment.seed)
        max_length = spec.student.max_length or getattr(task_options, "max_length", None)
        return cls(
            validated,
            Path(spec.experiment.output_dir),
            teacher_model,
            task,
            task_options,
            preprocessor,
            data,
            max_length,
        )

    @property
    def spec(self) -> Spec:
        """The spec's sections (``validated`` also holds the plugins they name)."""
        return self.validated.spec

    @property
    def head(self) -> HeadSpec:
        """The head the task's data asks for, on the teacher and on the student alike."""
        return self.data.head

    @cached_property
    def source_model(self) -> CaldModel:
        """The pretrained teacher with the task's head, loaded once and checked against the task.

        Stages that change a model (fine-tuning, a co-trained teacher, waypoint weights) take
        :meth:`source_copy` instead, so this one stays as loaded.
        """
        spec = self.spec
        with seeded(spec.experiment.seed):
            settings: dict[str, Any] = dict(
                max_length=self.max_length,
                task_metadata=self.data.metadata,
                source=self.validated.source,
                config_overrides=spec.teacher.config,
            )
            if spec.teacher.init == "random":
                config = read_model_config(self.teacher_model)
                model = CaldModel.from_source_config(
                    spec.teacher.source, config, self.head, **settings
                ).eval()
            else:
                model = CaldModel.from_source(
                    spec.teacher.source, self.teacher_model, self.head, **settings
                )
        check_vocabulary(self.preprocessor, model, self.teacher_model)
        check_positions(model, self.max_length, self.teacher_model)
        check_kept_layers(spec.student.keep_attention, model.num_layers, "student.keep_attention")
        return model

    @property
    def loss(self) -> LossConfig:
        """The spec's loss weights, temperature and reduction, as the engine takes them."""
        return LossConfig.from_section(self.spec.guidance)

    def extractor(self) -> Extractor:
        """The spec's hidden-state extractor, built from its options."""
        return self.validated.extractor.build(self.validated.extractor_options)

    def source_copy(self) -> CaldModel:
        """A model of its own, equal to :attr:`source_model` (head included)."""
        return copy.deepcopy(self.source_model)


def prepare(validated: ValidatedSpec) -> RunContext:
    """The pipeline's first stage: record the spec in the run directory, then prepare the run."""
    output_dir = Path(validated.spec.experiment.output_dir)
    if processes().is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / SPEC_FILE, dumps(validated.document))
    return RunContext.from_spec(validated)
