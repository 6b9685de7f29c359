"""``run``: the whole pipeline a spec asks for, from assets to the report.

spec -> plugins resolve names -> task builds the data -> source loads the teacher -> (teacher
fine-tuning, cached) -> mixer + source build the student -> guidance decides the teacher at each
step -> engine trains, evaluates, checkpoints -> export + report.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import PartialState

from . import __version__
from .assets import resolve_references
from .atomic import write_text_atomic
from .contracts import AvailableTeachers, HeadSpec, PluginOptions, Task, TaskData, Waypoint
from .consistency import check_positions, check_target, check_vocabulary
from .conversion import convert
from .engine.evaluation import evaluate_model
from .engine.finetune import FinetuneResult, finetune_teacher
from .engine.guidance import GuidanceSetup
from .engine.losses import LossConfig
from .engine.tensorfiles import read_tensors
from .engine.trainer import train
from .engine.waypoints import read_waypoints
from .errors import CaldError, CheckpointError
from .layout import (
    DONE_FILE, METRICS_FILE, SPEC_FILE, STUDENT_DIR, TEACHER_CACHE_DIR, TRANSFER_REPORT_FILE,
)
from .modeling import CaldModel
from .report import RunResults, SpeedComparison, write_results
from .spec import ValidatedSpec
from .spec.toml_writer import dumps


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random initialisations (task heads, mixers) drawn from the spec's seed alone.

    torch seeds itself differently in every process, so without this a run would not repeat,
    and a resumed run would build a different student than the interrupted one.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _processes() -> PartialState:
    """This process's place in a multi-process run (``torchrun``, ``accelerate launch``).

    ``cpu`` as the trainer's accelerator sets it: the first state made fixes it for the whole
    process, and on a CPU-only machine it is what joins the processes into one group.
    """
    return PartialState(cpu=not torch.cuda.is_available())


@dataclass
class _Prepared:
    """What every stage needs: resolved locations, the task and its data."""

    validated: ValidatedSpec
    output_dir: Path
    teacher_model: str
    task: Task
    task_options: PluginOptions
    data: TaskData
    max_length: int | None
    preprocessor: Any

    @property
    def head(self) -> HeadSpec:
        return self.data.head

    def source_teacher(self) -> CaldModel:
        spec = self.validated.spec
        with _seeded(spec.experiment.seed):
            teacher = CaldModel.from_source(
                spec.teacher.source,
                self.teacher_model,
                self.head,
                max_length=self.max_length,
                task_metadata=self.data.metadata,
                source=self.validated.source,
            )
        check_vocabulary(self.preprocessor, teacher, self.teacher_model)
        check_positions(teacher, self.max_length, self.teacher_model)
        return teacher


def _resolve(validated: ValidatedSpec, value: Any) -> Any:
    assets = validated.spec.assets
    return resolve_references(value, assets) if value is not None else None


def _prepare(validated: ValidatedSpec) -> _Prepared:
    spec = validated.spec
    output_dir = Path(spec.experiment.output_dir)
    processes = _processes()
    if processes.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / SPEC_FILE, dumps(validated.document))
    teacher_model = _resolve(validated, spec.teacher.model)
    options_data = _resolve(validated, validated.task_options.model_dump(exclude_unset=True))
    task_options = validated.task.options.model_validate(options_data)
    task = validated.task.build(task_options)
    preprocessor = validated.source.family().load_preprocessor(teacher_model)
    with processes.main_process_first():  # the others then read the main process's data cache
        data = task.build_data(preprocessor, spec.experiment.seed)
    max_length = spec.student.max_length or getattr(task_options, "max_length", None)
    return _Prepared(
        validated, output_dir, teacher_model, task, task_options, data, max_length, preprocessor
    )


# ------------------------------------------------------------------ teacher fine-tuning


def _cache_key(prepared: _Prepared) -> str:
    """Everything the fine-tuned teacher depends on, hashed."""
    validated = prepared.validated
    spec = validated.spec
    key = {
        "source": spec.teacher.source,
        "model": spec.teacher.model,
        "task": spec.task.kind,
        "task_options": prepared.task_options.model_dump(mode="json"),
        "training": validated.teacher_training.model_dump(mode="json"),
        "num_waypoints": spec.teacher.num_waypoints,
        "seed": spec.experiment.seed,
        "cald_framework": __version__,
    }
    encoded = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _teacher_cache(prepared: _Prepared) -> Path:
    configured = prepared.validated.spec.experiment.teacher_cache
    root = Path(configured) if configured else prepared.output_dir / TEACHER_CACHE_DIR
    return root / _cache_key(prepared)


def _finetuned_teacher(prepared: _Prepared, resume: bool) -> tuple[FinetuneResult, float | None]:
    """The cached fine-tuning run, or a new one; returns it and its training time (``None`` if cached)."""
    directory = _teacher_cache(prepared)
    done = directory / DONE_FILE
    if done.is_file():
        return FinetuneResult.from_dict(json.loads(done.read_text()), directory), None
    spec = prepared.validated.spec
    result = finetune_teacher(
        prepared.source_teacher(),
        prepared.task,
        prepared.data,
        training=prepared.validated.teacher_training,
        evaluation=spec.evaluation,
        output_dir=directory,
        num_waypoints=spec.teacher.num_waypoints,
        seed=spec.experiment.seed,
        resume=resume or directory.exists(),
    )
    if _processes().is_main_process:
        write_text_atomic(done, json.dumps(result.to_dict(directory), indent=2))
    return result, result.wall_seconds


# ------------------------------------------------------------------ speed


def _median_forward_ms(model: torch.nn.Module, batch: dict[str, Any], repeats: int = 5) -> float:
    inputs = batch["inputs"]
    timings = []
    with torch.inference_mode():
        model(**inputs)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(**inputs)
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def measure_speed(teacher: torch.nn.Module, student: torch.nn.Module, batch: dict[str, Any]) -> SpeedComparison:
    """One forward pass of each on the same batch, median of repeats after a warm-up."""
    teacher.eval()
    student.eval()
    first = next(iter(batch["inputs"].values()))
    return SpeedComparison(
        batch_size=int(first.shape[0]),
        length=int(first.shape[1]),
        teacher_ms=_median_forward_ms(teacher, batch),
        student_ms=_median_forward_ms(student, batch),
    )


def _longest_eval_batch(prepared: _Prepared, size: int) -> dict[str, Any]:
    rows = [prepared.data.eval[index] for index in range(min(size, len(prepared.data.eval)))]
    return prepared.data.collate(rows)


# ------------------------------------------------------------------ the run


def _count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def run_pipeline(validated: ValidatedSpec, *, resume: bool = False) -> RunResults | None:
    """Run every stage the spec asks for and write ``results.json`` and ``report.md``.

    Under ``torchrun`` or ``accelerate launch`` every process trains; only the main one writes,
    exports and reports, and the others return ``None`` once training is done.
    """
    started = time.perf_counter()
    spec = validated.spec
    prepared = _prepare(validated)
    guidance = validated.guidance
    init = validated.student_init

    target_dir = _resolve(validated, spec.teacher.target)
    waypoints: list[Waypoint] = []
    finetune_seconds = None
    needs_target = (guidance.needs_target_teacher or init == "target") and not target_dir
    needs_waypoints = guidance.needs_waypoints and not spec.teacher.waypoints
    if needs_target or needs_waypoints:
        result, finetune_seconds = _finetuned_teacher(prepared, resume)
        target_dir = target_dir or str(result.target_dir)
        waypoints = result.waypoints
    if spec.teacher.waypoints:
        waypoints = read_waypoints(Path(_resolve(validated, spec.teacher.waypoints)))

    source_teacher = prepared.source_teacher()
    target_teacher = CaldModel.from_pretrained(target_dir) if target_dir else None
    if target_teacher is not None:
        check_target(target_teacher, str(target_dir), source_teacher, prepared.head)

    def load_target() -> CaldModel:
        return CaldModel.from_pretrained(target_dir)

    def load_waypoint(path: Path) -> CaldModel:
        return _with_weights(prepared.source_teacher, path)

    convert_from = target_teacher or source_teacher
    init_from = source_teacher if (init == "source" and target_teacher is not None) else None
    if init == "target" and target_teacher is None:
        raise CaldError("student.init = 'target' needs a target teacher, but none was produced")
    with _seeded(spec.experiment.seed):
        student, transfer = convert(
            convert_from,
            validated.mixer,
            validated.mixer_options,
            prepared.max_length or 0,
            init_from=init_from,
        )
    if _processes().is_main_process:
        transfer.save(prepared.output_dir / TRANSFER_REPORT_FILE)

    teachers = AvailableTeachers(
        source=prepared.source_teacher,
        target=load_target if target_dir else None,
        waypoints=waypoints,
        load_teacher=load_waypoint,
        train_mode=spec.teacher.train_mode,
        precision=spec.teacher.precision,
    )
    extractor = validated.extractor.build(validated.extractor_options)
    trained = train(
        student,
        prepared.task,
        prepared.data,
        training=spec.training,
        evaluation=spec.evaluation,
        loss=LossConfig.from_section(spec.guidance),
        guidance=GuidanceSetup(guidance, validated.guidance_options, teachers),
        extractor=extractor,
        output_dir=prepared.output_dir,
        seed=spec.experiment.seed,
        resume=resume,
    )
    if not _processes().is_main_process:
        return None
    student = trained.model
    student.save_pretrained(prepared.output_dir / STUDENT_DIR)

    reference_teacher = target_teacher or trained.trained_teacher or source_teacher
    teacher_metrics = (
        evaluate_model(reference_teacher, prepared.task, prepared.data, spec.training)
        if spec.evaluation.evaluate_teacher
        else {}
    )
    speed = measure_speed(
        reference_teacher, student, _longest_eval_batch(prepared, spec.training.batch_size)
    )
    results = RunResults(
        experiment=spec.experiment.name,
        task=spec.task.kind,
        mode=guidance.name,
        source=spec.teacher.source,
        mixer=validated.mixer.name,
        student_init=init,
        primary_metric=trained.metric,
        higher_is_better=prepared.task.higher_is_better,
        teacher_metrics=teacher_metrics,
        student_metrics=trained.metrics,
        teacher_parameters=_count(reference_teacher),
        student_parameters=_count(student),
        steps=trained.steps,
        train_wall_seconds=trained.wall_seconds,
        total_wall_seconds=time.perf_counter() - started,
        teacher_finetune_wall_seconds=finetune_seconds,
        speed=speed,
        paths={
            "student": str(prepared.output_dir / STUDENT_DIR),
            "transfer_report": str(prepared.output_dir / TRANSFER_REPORT_FILE),
            "metrics": str(prepared.output_dir / METRICS_FILE),
            "teacher": str(target_dir or prepared.teacher_model),
        },
        versions={
            "cald_framework": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    )
    write_results(results, prepared.output_dir)
    return results


def _with_weights(build: Callable[[], CaldModel], path: Path) -> CaldModel:
    """A fresh model from ``build`` holding the weights of a waypoint file."""
    model = build()
    try:
        model.load_state_dict(read_tensors(path))
    except RuntimeError as error:
        details = " ".join(str(error).split())[:300]
        raise CheckpointError(f"waypoint {path} does not fit teacher.model: {details}") from error
    return model
