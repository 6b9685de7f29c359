"""The teachers of a run: the fine-tuned target (cached), the waypoints, and their providers.

A mode that needs a target teacher or waypoints the spec does not give gets them from a
teacher fine-tuning run, kept in the teacher cache under a key of everything that run depends
on, so that every run of the same teacher and task shares it. The providers handed to guidance
give each caller a model of its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..atomic import write_text_atomic
from ..consistency import check_target
from ..contracts import AvailableTeachers, Waypoint
from ..engine.finetune import FinetuneResult, finetune_teacher
from ..engine.precision import WEIGHT_DTYPES
from ..engine.tensorfiles import read_tensors
from ..engine.waypoints import read_waypoints
from ..errors import CheckpointError
from ..layout import DONE_FILE, TEACHER_CACHE_DIR
from ..locks import holding
from ..modeling import CaldModel
from .prepare import RunContext, processes, resolve_assets


@dataclass(frozen=True)
class RunTeachers:
    """The teachers a run has beyond the pretrained one (:attr:`RunContext.source_model`)."""

    #: the fine-tuned teacher's directory: the spec's ``teacher.target`` or the cache's
    target_dir: str | None
    #: the fine-tuned teacher, loaded from ``target_dir``
    target: CaldModel | None
    #: the waypoints of the teacher's fine-tuning run, by increasing step
    waypoints: list[Waypoint]
    #: the training time of the fine-tuning run; ``None`` when given by the spec or cached
    finetune_seconds: float | None


def teacher_cache_key(context: RunContext) -> str:
    """Everything the fine-tuned teacher depends on, hashed."""
    validated = context.validated
    spec = validated.spec
    key = {
        "source": spec.teacher.source,
        "model": spec.teacher.model,
        "task": spec.task.kind,
        "task_options": context.task_options.model_dump(mode="json"),
        # how the processes share the work changes rounding only, like their number
        "training": validated.teacher_training.model_dump(mode="json", exclude={"distributed"}),
        "num_waypoints": spec.teacher.num_waypoints,
        "seed": spec.experiment.seed,
        "cald_framework": __version__,
    }
    if spec.teacher.init != "pretrained":  # keys of pretrained teachers stay as they were
        key["init"] = spec.teacher.init
    if spec.teacher.config:  # absent when empty, so that caches from before it stay valid
        key["config"] = spec.teacher.config
    encoded = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def teacher_cache_dir(context: RunContext) -> Path:
    """This run's entry of the teacher cache (``experiment.teacher_cache``, else in the run)."""
    configured = context.spec.experiment.teacher_cache
    root = Path(configured) if configured else context.output_dir / TEACHER_CACHE_DIR
    return root / teacher_cache_key(context)


def cached_finetune(context: RunContext) -> FinetuneResult | None:
    """The teacher cache's finished fine-tuning run for this spec, or ``None``."""
    directory = teacher_cache_dir(context)
    done = directory / DONE_FILE
    if not done.is_file():
        return None
    return FinetuneResult.from_dict(json.loads(done.read_text()), directory)


def finetuned_teacher(context: RunContext, resume: bool) -> tuple[FinetuneResult, float | None]:
    """The cached fine-tuning run, or a new one; returns it and its training time (``None`` if cached).

    The main process holds the cache entry's lock while it fine-tunes: a run that needs the
    same entry meanwhile waits for it and then reuses the result.
    """
    cached = cached_finetune(context)
    if cached is not None:
        return cached, None
    directory = teacher_cache_dir(context)
    if not processes().is_main_process:
        return _finetune(context, directory, resume)
    lock = directory.with_name(f"{directory.name}.lock")
    with holding(lock, f"teacher cache entry {directory}", wait=True):
        cached = cached_finetune(context)  # finished by the run this one waited for
        if cached is not None:
            return cached, None
        return _finetune(context, directory, resume)


def _finetune(context: RunContext, directory: Path, resume: bool) -> tuple[FinetuneResult, float]:
    """Fine-tune the teacher into the cache entry ``directory`` and mark it done."""
    spec = context.spec
    result = finetune_teacher(
        context.source_copy(),
        context.task,
        context.data,
        training=context.validated.teacher_training,
        evaluation=spec.evaluation,
        output_dir=directory,
        num_waypoints=spec.teacher.num_waypoints,
        seed=spec.experiment.seed,
        resume=resume or directory.exists(),
    )
    if processes().is_main_process:
        write_text_atomic(directory / DONE_FILE, json.dumps(result.to_dict(directory), indent=2))
    return result, result.wall_seconds


def available_target_dir(context: RunContext) -> str | None:
    """A fine-tuned teacher that exists without training one: the spec's ``teacher.target``,
    else the teacher cache's finished run for this spec, else ``None``."""
    given = resolve_assets(context.validated, context.spec.teacher.target)
    if given:
        return given
    cached = cached_finetune(context)
    return None if cached is None else str(cached.target_dir)


def resolve_teachers(context: RunContext, resume: bool) -> RunTeachers:
    """The teachers stage: the target and waypoints the spec gives, else fine-tuned (or cached)."""
    validated = context.validated
    spec = validated.spec
    guidance = validated.guidance
    target_dir = resolve_assets(validated, spec.teacher.target)
    waypoints: list[Waypoint] = []
    finetune_seconds = None
    needs_target = (
        guidance.needs_target_teacher or validated.student_init == "target"
    ) and not target_dir
    needs_waypoints = guidance.needs_waypoints and not spec.teacher.waypoints
    if needs_target or needs_waypoints:
        result, finetune_seconds = finetuned_teacher(context, resume)
        target_dir = target_dir or str(result.target_dir)
        waypoints = result.waypoints
    if spec.teacher.waypoints:
        waypoints = read_waypoints(Path(resolve_assets(validated, spec.teacher.waypoints)))
    source = context.source_model  # loaded and checked before the target it is compared with
    target = CaldModel.from_pretrained(target_dir) if target_dir else None
    if target is not None:
        check_target(target, str(target_dir), source, context.head)
    return RunTeachers(target_dir, target, waypoints, finetune_seconds)


def teacher_providers(context: RunContext, teachers: RunTeachers) -> AvailableTeachers:
    """The lazy providers guidance draws its teachers from; each call gives a model of its own.

    The pretrained teacher is copied from the one model loaded; the target is read from disk
    again, because loading draws from torch's global generator, and the draws a run has always
    made keep its results as they were. Each comes in ``teacher.dtype``.
    """
    spec = context.spec
    target_dir = teachers.target_dir
    dtype = WEIGHT_DTYPES[spec.teacher.dtype]

    def load_source() -> CaldModel:
        return context.source_copy().to(dtype)

    def load_target() -> CaldModel:
        return CaldModel.from_pretrained(target_dir).to(dtype)

    def load_waypoint(path: Path) -> CaldModel:
        return _with_weights(context.source_copy(), path).to(dtype)

    return AvailableTeachers(
        source=load_source,
        target=load_target if target_dir else None,
        waypoints=teachers.waypoints,
        load_teacher=load_waypoint,
        train_mode=spec.teacher.train_mode,
        precision=spec.teacher.precision,
    )


def _with_weights(model: CaldModel, path: Path) -> CaldModel:
    """``model`` holding the weights of the waypoint file at ``path``."""
    try:
        model.load_state_dict(read_tensors(path))
    except RuntimeError as error:
        details = " ".join(str(error).split())[:300]
        raise CheckpointError(f"waypoint {path} does not fit teacher.model: {details}") from error
    return model
