"""The training loop shared by every task and guidance mode, and by teacher fine-tuning.

:class:`Trainer` holds a run: the student prepared on this process's device, its optimizer and
LR schedule, the guidance schedule and the checkpoints. :meth:`Trainer.step` takes one
optimizer step over ``grad_accum`` micro-batches (see :mod:`.step`); :meth:`Trainer.fit` is the
loop around it: seeded epochs of micro-batches, logging, evaluation on the main process every
``evaluation.every`` steps and at the end, checkpoints (see :mod:`.state`) and the restore of
the best one. A step whose loss is not finite on any process is skipped everywhere;
``max_nonfinite_steps`` of them in a row stop the run with a checkpoint and an error.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from torch import nn

from ..contracts import AvailableTeachers, Extractor, GuidanceSchedule, Task, TaskData, TaskOnly
from ..errors import CaldError
from ..layout import CHECKPOINTS_DIR, METRICS_FILE
from ..spec.sections import EvaluationSection, TrainingSection
from .activations import enable_gradient_checkpointing
from .batching import epoch_batches, make_loader, total_steps, updates_in
from .checkpoints import remove_temporaries
from .evaluation import evaluate_model
from .guidance import GuidanceSetup, TrainerContext
from .layouts import is_sharded, is_zero, make_accelerator, shard_layers_of
from .logbook import Logbook
from .losses import LossConfig
from .optim import build_optimizer
from .precision import Precision
from .rng import seed_everything
from .schedules import build_scheduler
from .shards import full_weights
from .state import Checkpointer, Progress, is_better
from .step import StepResult, StudentStep
from .zero_step import drop_empty_groups, release_engine


@dataclass(frozen=True)
class StepEnd:
    """What an ``on_step_end`` callback sees, after the update and before evaluation or saving."""

    #: optimizer steps done so far
    step: int
    total_steps: int
    #: the student, unwrapped from any distributed wrapper
    model: nn.Module
    is_main_process: bool


@dataclass(frozen=True)
class TrainResult:
    """What a finished run hands to the pipeline: the trained student, its metrics and its files."""

    steps: int
    total_steps: int
    wall_seconds: float
    #: the metric that chose the best checkpoint and whether higher is better
    metric: str
    higher_is_better: bool
    #: metrics of the last evaluation (at the final step)
    final_metrics: dict[str, float]
    best_metrics: dict[str, float]
    best_step: int
    #: the trained model (the student passed in) and the metrics of the weights it holds:
    #: the best checkpoint's when ``evaluation.select_best``, else the final ones
    model: nn.Module
    metrics: dict[str, float]
    output_dir: Path
    metrics_path: Path
    last_checkpoint: Path
    best_checkpoint: Path
    #: the teacher the guidance schedule trained alongside the student, if any (trajectory)
    trained_teacher: nn.Module | None = None
    #: what the guidance schedule decided during the run (``GuidanceSchedule.summary``)
    guidance_summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    """Sums of the logged quantities since the last ``train`` event."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    rows: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.steps += 1


def _number(value: torch.Tensor) -> float | list[float]:
    """A logged value as JSON takes it: a scalar as a number, per-layer values as a list."""
    return value.tolist() if value.dim() else value.item()


class Trainer:
    """A training run of ``student`` on ``task`` under ``guidance`` (task loss only when ``None``).

    Building it prepares everything on this process's device (the student moves there). Then
    either :meth:`fit` runs the whole loop (what :func:`train` does), or :meth:`step` takes
    single optimizer steps on micro-batches the caller collates (benchmarks, custom loops).
    """

    def __init__(
        self,
        student: nn.Module,
        task: Task,
        data: TaskData,
        *,
        training: TrainingSection,
        evaluation: EvaluationSection,
        loss: LossConfig,
        output_dir: Path,
        seed: int,
        guidance: GuidanceSetup | None = None,
        extractor: Extractor | None = None,
        on_step_end: Callable[[StepEnd], None] | None = None,
    ):
        if extractor is None and guidance is not None and loss.weights.ld > 0:
            raise CaldError("guidance.alpha_ld > 0 needs a hidden-state extractor")
        self.task, self.data, self.loss = task, data, loss
        self.training, self.evaluation = training, evaluation
        self.output_dir, self.seed, self.on_step_end = Path(output_dir), seed, on_step_end
        self.accelerator = make_accelerator(training, self.output_dir)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        self.precision = Precision(training.precision, self.device)
        seed_everything(seed + self.rank)
        #: optimizer steps of the whole run
        self.total_steps = total_steps(training, updates_in(len(self._batches(0)), training))
        student.to(self.device)
        self.student = student
        if training.gradient_checkpointing:
            enable_gradient_checkpointing(student)
        self.sharded, self.zero = is_sharded(self.accelerator), is_zero(self.accelerator)
        # sharding replaces the parameters of the module it is given: under FSDP and DeepSpeed a
        # copy is sharded and the caller's student stays whole, in host memory, for evaluation and export
        trained = copy.deepcopy(student) if self.sharded or self.zero else student
        if self.sharded or self.zero:
            student.to("cpu")
        shard_layers_of(self.accelerator, trained)
        optimizer = build_optimizer(trained, training, param_groups=True)
        if self.zero:
            drop_empty_groups(optimizer)
        scheduler = build_scheduler(optimizer, training, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(trained, optimizer, scheduler)
        self.schedule = self._build_schedule(guidance)
        self.student_step = StudentStep(
            model=self.model,
            parameters=list(self.model.parameters()),
            task=task,
            loss=loss,
            extractor=extractor,
            schedule=self.schedule,
            optimizer=self.optimizer,
            precision=self.precision,
            accelerator=self.accelerator,
            max_grad_norm=training.max_grad_norm,
        )
        self.metric = evaluation.metric or task.primary_metric
        self.higher_is_better = task.higher_is_better
        self.checkpoints = Checkpointer(
            self.output_dir / CHECKPOINTS_DIR,
            self.accelerator,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            precision=self.precision,
            schedule=self.schedule,
            total_steps=self.total_steps,
        )
        self.progress = Progress()
        self.window = _Window()
        self.warnings: list[str] = []

    def _build_schedule(self, guidance: GuidanceSetup | None) -> GuidanceSchedule:
        teachers = guidance.teachers if guidance else AvailableTeachers()
        context = TrainerContext(
            mode=guidance.plugin.name if guidance else "unguided",
            teachers=teachers,
            total_steps=self.total_steps,
            weights=self.loss.weights,
            task=self.task,
            training=self.training,
            teacher_training=(guidance and guidance.teacher_training) or self.training,
            accelerator=self.accelerator,
            teacher_precision=Precision(teachers.precision or self.training.precision, self.device),
        )
        return guidance.build(context) if guidance else TaskOnly(context)

    def _batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(
            self.data, self.training, seed=self.seed, epoch=epoch, rank=self.rank, world=self.world
        )

    # ---------------------------------------------------------------- one step

    def step(self, micro_batches: Sequence[Mapping[str, Any]]) -> StepResult:
        """One optimizer step over collated ``micro_batches`` (the loop passes ``grad_accum``).

        The guidance schedule plans the step, the student accumulates gradients over the
        micro-batches, the update is clipped and applied (or skipped everywhere when something
        was not finite), the LR schedule advances and the schedule's ``after_step`` runs.
        Logging, evaluation and checkpoints are the loop's (:meth:`fit`).
        """
        step = self.progress.step
        plan = self.schedule.plan(step)
        losses, finite, rows = self.student_step.accumulate(micro_batches, plan)
        lr = self.scheduler.get_last_lr()[0]
        applied, grad_norm = self.student_step.update(finite)
        self.scheduler.step()
        event = self._observe(step, losses) if applied and self.schedule.observes_losses else None
        self.schedule.after_step(step)
        self.progress.step += 1
        return StepResult(self.progress.step, lr, applied, losses, grad_norm, rows, event)

    def _observe(self, step: int, losses: Mapping[str, torch.Tensor]) -> Mapping[str, Any] | None:
        """Hand the schedule the step's scalar loss terms, averaged over the processes."""
        names = [name for name, value in losses.items() if value.dim() == 0]
        values = torch.stack([losses[name] for name in names])
        if self.world > 1:
            values = self.accelerator.reduce(values, "mean")
        return self.schedule.observe(step, dict(zip(names, values.tolist())))

    # ---------------------------------------------------------------- evaluation and saving

    def whole_student(self) -> nn.Module:
        """The student with the trained weights, whole, on the main process.

        Every process must call it: under FSDP and DeepSpeed it gathers the shards into the
        caller's student (on the main process's device); otherwise that student is the trained
        module itself.
        """
        if not (self.sharded or self.zero):
            return self.accelerator.unwrap_model(self.model)
        weights = self.accelerator.get_state_dict(self.model) if self.zero else full_weights(self.model)
        if self.accelerator.is_main_process:
            self.student.load_state_dict(weights)
            self.student.to(self.device)
        return self.student

    def _evaluate(self) -> dict[str, float]:
        """Metrics computed on the main process (exact for any metric) and shared with the rest."""
        holder: list[Any] = [None]
        model = self.whole_student()
        if self.accelerator.is_main_process:
            holder[0] = evaluate_model(
                model,
                self.task,
                self.data,
                self.training,
                device=self.device,
                precision=self.precision,
            )
        if self.world > 1:
            broadcast_object_list(holder)
        metrics: dict[str, float] = holder[0]
        if self.metric not in metrics:
            raise CaldError(
                f"evaluation.metric {self.metric!r} is not among the task's metrics: "
                f"{', '.join(sorted(metrics))}"
            )
        return metrics

    def _save(self) -> Path:
        best = self.progress.best_step
        keep = [self.checkpoints.path(best)] if self.evaluation.select_best and best else []
        return self.checkpoints.save(self.progress, keep_last=self.training.keep_last, keep=keep)

    def _evaluate_and_save(self, step: int, epoch: float, log: Logbook) -> None:
        every = self.evaluation.every
        final = step == self.total_steps
        evaluated = final or (every is not None and step % every == 0)
        if evaluated:
            metrics = self._evaluate()
            better = is_better(metrics, self.progress.best_metrics, self.metric, self.higher_is_better)
            if better:
                self.progress.best_step, self.progress.best_metrics = step, metrics
            self.progress.last_metrics = metrics
            log.record("eval", step, {"epoch": epoch, "metrics": metrics, "best": better})
        save_every = self.training.save_every
        if evaluated or (save_every is not None and step % save_every == 0):
            self._save()

    # ---------------------------------------------------------------- the loop

    def _loop_step(self, micro_batches: list[Any], updates: int, log: Logbook) -> None:
        result = self.step(micro_batches)
        self.progress.position += 1
        step = result.step
        epoch = self.progress.epoch + self.progress.position / updates
        self.window.rows += result.rows * self.world
        if result.guidance_event is not None:
            log.record("guidance", step, dict(result.guidance_event))
        if result.applied:
            self.progress.nonfinite_streak = 0
            norm = {} if result.grad_norm is None else {"grad_norm": result.grad_norm.float()}
            self.window.add({**result.losses, **norm})
        else:
            losses = {name: _number(value) for name, value in result.losses.items()}
            self._skipped(log, step, {"epoch": epoch, "lr": result.lr, **losses})
        if step % self.training.log_every == 0 or step == self.total_steps:
            self._log_window(log, step, epoch, result.lr)
        if self.on_step_end is not None:
            model = self.whole_student()
            main = self.accelerator.is_main_process
            self.on_step_end(StepEnd(step, self.total_steps, model, main))
        self._evaluate_and_save(step, epoch, log)

    def _skipped(self, log: Logbook, step: int, values: dict[str, float]) -> None:
        """Log a skipped step; stop the run after too many in a row."""
        streak = self.progress.nonfinite_streak = self.progress.nonfinite_streak + 1
        log.record("nonfinite", step, {**values, "streak": streak})
        if streak >= self.training.max_nonfinite_steps:
            path = self._save()
            raise CaldError(
                f"training stopped at step {step}: the loss was not finite for {streak} steps in "
                f"a row (training.max_nonfinite_steps); state saved in {path}"
            )

    def _log_window(self, log: Logbook, step: int, epoch: float, lr: float) -> None:
        window = self.window
        names = sorted(window.sums)
        values: dict[str, float | list[float]] = {}
        if window.steps:
            means = [window.sums[name] / window.steps for name in names]
            flat = torch.cat([mean.reshape(-1) for mean in means])
            if self.world > 1:
                flat = self.accelerator.reduce(flat, "mean")
            parts = flat.split([mean.numel() for mean in means])
            values = {
                name: _number(part.view_as(mean)) for name, mean, part in zip(names, means, parts)
            }
        elapsed = time.perf_counter() - window.started
        speed = window.rows / elapsed if elapsed > 0 else 0.0
        log.record("train", step, {"epoch": epoch, "lr": lr, **values, "samples_per_s": speed})
        log.advance({**values, "samples/s": speed})
        self.window = _Window()

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``total_steps``; with ``resume``, from the newest usable checkpoint."""
        started = time.perf_counter()
        if self.accelerator.is_main_process:
            remove_temporaries(self.checkpoints.directory)
        self.accelerator.wait_for_everyone()
        restored = self.checkpoints.restore(self.warnings.append) if resume else None
        if restored is not None:
            self.progress = restored
        log = Logbook(
            self.output_dir,
            self.accelerator,
            total_steps=self.total_steps,
            start_step=self.progress.step,
            resumed=restored is not None,
            tracked=bool(self.training.trackers),
        )
        for message in self.warnings:
            log.warn(self.progress.step, message)
        try:
            self._loop(log)
        finally:
            log.close()
        return self._result(time.perf_counter() - started)

    def _loop(self, log: Logbook) -> None:
        accumulation = self.training.grad_accum
        while self.progress.step < self.total_steps:
            batches = self._batches(self.progress.epoch)
            updates = updates_in(len(batches), self.training)
            remaining = batches[self.progress.position * accumulation : updates * accumulation]
            loader = make_loader(
                self.data.train,
                remaining,
                self.data.collate,
                self.training.num_workers,
                seed=self.seed + self.progress.epoch,
            )
            micro_batches = iter(loader)
            while self.progress.position < updates and self.progress.step < self.total_steps:
                group = [next(micro_batches) for _ in range(accumulation)]
                self._loop_step(group, updates, log)
            if self.progress.position >= updates:
                self.progress.epoch += 1
                self.progress.position = 0

    def _result(self, wall_seconds: float) -> TrainResult:
        progress = self.progress
        assert progress.best_step is not None and progress.best_metrics and progress.last_metrics
        select_best = self.evaluation.select_best and progress.best_step != progress.step
        if select_best:
            self.checkpoints.load_weights(progress.best_step)
        self.whole_student()
        if self.zero:
            release_engine(self.accelerator, self.model)
        return TrainResult(
            steps=progress.step,
            total_steps=self.total_steps,
            wall_seconds=wall_seconds,
            metric=self.metric,
            higher_is_better=self.higher_is_better,
            final_metrics=progress.last_metrics,
            best_metrics=progress.best_metrics,
            best_step=progress.best_step,
            model=self.student,
            metrics=progress.best_metrics if select_best else progress.last_metrics,
            output_dir=self.output_dir,
            metrics_path=self.output_dir / METRICS_FILE,
            last_checkpoint=self.checkpoints.path(progress.step),
            best_checkpoint=self.checkpoints.path(progress.best_step),
            trained_teacher=self.schedule.trained_teacher(),
            guidance_summary=self.schedule.summary(),
        )


def train(
    student: nn.Module,
    task: Task,
    data: TaskData,
    *,
    training: TrainingSection,
    evaluation: EvaluationSection,
    loss: LossConfig,
    output_dir: Path,
    seed: int,
    guidance: GuidanceSetup | None = None,
    extractor: Extractor | None = None,
    resume: bool = False,
    on_step_end: Callable[[StepEnd], None] | None = None,
) -> TrainResult:
    """Train ``student`` on ``task`` under ``guidance`` (task loss only when ``None``).

    Writes ``metrics.jsonl`` and ``checkpoints/`` under ``output_dir``. With ``resume``, the run
    continues from the newest usable checkpoint there (falling back past broken ones). On
    return the student holds the best checkpoint's weights when ``evaluation.select_best``,
    else the final ones.
    """
    trainer = Trainer(
        student,
        task,
        data,
        training=training,
        evaluation=evaluation,
        loss=loss,
        output_dir=output_dir,
        seed=seed,
        guidance=guidance,
        extractor=extractor,
        on_step_end=on_step_end,
    )
    return trainer.fit(resume)
