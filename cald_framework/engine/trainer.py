"""The training loop shared by every task and guidance mode, and by teacher fine-tuning.

One optimizer step takes ``grad_accum`` micro-batches. For each, the guidance schedule may run
its teacher (once, reused for KD and LD targets), the student runs, and the weighted loss is
back-propagated (gradients are synchronised across processes only on the last micro-batch).
A step whose loss is not finite on any process is skipped everywhere; ``max_nonfinite_steps``
of them in a row stop the run with a checkpoint and an error. Evaluation runs on the main
process every ``evaluation.every`` steps and at the end, and each evaluation is checkpointed
so that the best one can be restored.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import (
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
)
from torch import nn

from ..contracts import CaldOutput, ExtractedStates, Task, TaskData
from ..errors import CaldError
from ..spec.sections import EvaluationSection, TrainingSection
from .batching import batch_rows, epoch_batches, make_loader, to_device, total_steps, updates_in
from .checkpoints import checkpoint_name, latest_checkpoint, open_checkpoint, prune, remove_temporaries, save_checkpoint
from .evaluation import evaluate_model
from .guidance import GuidanceContext, GuidanceSchedule, GuidanceSetup, StepPlan, TaskOnly, TeacherSources
from ..layout import CHECKPOINTS_DIR, METRICS_FILE, TRACKERS_DIR
from .logbook import Logbook, check_trackers
from .losses import LossConfig, LossWeights, combine, kd_loss, ld_loss
from .optim import build_optimizer
from .precision import Precision
from .rng import capture_rng, restore_rng, seed_everything
from .schedules import build_scheduler

Extractor = Callable[[CaldOutput], ExtractedStates]


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


@dataclass
class _Progress:
    """The loop's position and bookkeeping, saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    #: optimizer steps done in the current epoch
    position: int = 0
    nonfinite_streak: int = 0
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    last_metrics: dict[str, float] | None = None


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


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor that autograd may save: inference-mode results are cloned, others detached."""
    return tensor.clone() if tensor.is_inference() else tensor.detach()


#: accelerate layouts that shard or wrap the model in ways this loop does not drive: it prepares
#: only the student (never the optimizer) and runs its own backward, clipping and steps, so
#: under these the student would train unsharded and unsynchronised, or not at all
_UNSUPPORTED = {
    DistributedType.DEEPSPEED: "DeepSpeed",
    DistributedType.FSDP: "FSDP",
    DistributedType.MEGATRON_LM: "Megatron-LM",
    DistributedType.XLA: "XLA",
}


def check_distributed_type(kind: DistributedType) -> None:
    """Refuse an accelerate layout the loop cannot train under, rather than train wrongly."""
    if kind in _UNSUPPORTED:
        raise CaldError(
            f"the accelerate configuration asks for {_UNSUPPORTED[kind]}, which the trainer does not "
            "support: use one process or data-parallel processes (see docs/distributed.md)"
        )


def _make_accelerator(training: TrainingSection, output_dir: Path) -> Accelerator:
    check_trackers(list(training.trackers))
    accelerator = Accelerator(
        # under torchrun on a CPU-only machine, ``cpu=True`` is what makes the processes a group
        cpu=not torch.cuda.is_available(),
        log_with=list(training.trackers) or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / TRACKERS_DIR)
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True),
            # evaluation runs on the main process while the others wait
            InitProcessGroupKwargs(timeout=timedelta(hours=2)),
        ],
    )
    check_distributed_type(accelerator.distributed_type)
    return accelerator


@dataclass(frozen=True)
class _Settings:
    """The keyword arguments of :func:`train`."""

    training: TrainingSection
    evaluation: EvaluationSection
    loss: LossConfig
    output_dir: Path
    seed: int
    guidance: GuidanceSetup | None
    extractor: Extractor | None
    on_step_end: Callable[[StepEnd], None] | None


class _Run:
    def __init__(self, student: nn.Module, task: Task, data: TaskData, settings: _Settings):
        if settings.extractor is None and settings.guidance is not None and settings.loss.weights.ld > 0:
            raise CaldError("guidance.alpha_ld > 0 needs a hidden-state extractor")
        self.task, self.data, self.settings = task, data, settings
        self.training, self.evaluation, self.loss = settings.training, settings.evaluation, settings.loss
        self.extractor, self.output_dir, self.seed = settings.extractor, settings.output_dir, settings.seed
        self.accelerator = _make_accelerator(self.training, self.output_dir)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        self.precision = Precision(self.training.precision, self.device)
        seed_everything(self.seed + self.rank)
        self.total_steps = total_steps(self.training, updates_in(len(self._batches(0)), self.training))
        student.to(self.device)
        self.student = student
        self.optimizer = build_optimizer(student, self.training)
        self.scheduler = build_scheduler(self.optimizer, self.training, self.total_steps)
        self.model = self.accelerator.prepare_model(student)
        self.schedule = self._build_schedule(settings.guidance)
        self.metric = self.evaluation.metric or task.primary_metric
        self.higher_is_better = task.higher_is_better
        self.checkpoints = self.output_dir / CHECKPOINTS_DIR
        self.progress = _Progress()
        self.window = _Window()
        self.warnings: list[str] = []

    def _build_schedule(self, guidance: GuidanceSetup | None) -> GuidanceSchedule:
        teachers = guidance.teachers if guidance else TeacherSources()
        context = GuidanceContext(
            mode=guidance.plugin.name if guidance else "unguided",
            teachers=teachers,
            total_steps=self.total_steps,
            weights=self.loss.weights,
            task=self.task,
            training=self.training,
            accelerator=self.accelerator,
            teacher_precision=Precision(teachers.precision or self.training.precision, self.device),
        )
        return guidance.build(context) if guidance else TaskOnly(context)

    # ---------------------------------------------------------------- data

    def _batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(
            self.data, self.training, seed=self.seed, epoch=epoch, rank=self.rank, world=self.world
        )

    # ---------------------------------------------------------------- one step

    def _teacher_targets(self, plan: StepPlan, batch: Mapping[str, Any]) -> dict[str, Any]:
        """KD logits and LD states of the teacher, computed once and detached from it."""
        output = self.schedule.teacher_output(batch)
        targets: dict[str, Any] = {}
        with torch.inference_mode():
            if plan.weights.kd > 0:
                targets["kd"] = self.task.kd_logits(output, batch)[0]
            if plan.weights.ld > 0:
                assert self.extractor is not None
                targets["ld"] = self.extractor(output)
        if "kd" in targets:
            targets["kd"] = _plain(targets["kd"])
        if "ld" in targets:
            states = targets["ld"]
            targets["ld"] = ExtractedStates([_plain(x) for x in states.layers], _plain(states.mask))
        return targets

    def _terms(
        self, output: CaldOutput, batch: Mapping[str, Any], targets: dict[str, Any], weights: LossWeights
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if weights.task > 0:
            terms["task"] = self.task.loss(output, batch)
        if "kd" in targets:
            logits, mask = self.task.kd_logits(output, batch)
            terms["kd"] = kd_loss(
                logits,
                targets["kd"],
                mask,
                temperature=self.loss.temperature,
                scale_t2=self.loss.kd_scale_t2,
            )
        if "ld" in targets:
            assert self.extractor is not None
            terms["ld"] = ld_loss(self.extractor(output), targets["ld"], self.loss.ld_reduction)
        return terms

    def _forward_backward(
        self, micro_batches: list[Any], plan: StepPlan
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """Accumulate gradients over the micro-batches; returns mean terms, a finite flag, rows."""
        self.model.train()
        count = len(micro_batches)
        means: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        rows = 0
        for index, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            rows += batch_rows(batch)
            last = index == count - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                targets = self._teacher_targets(plan, batch) if plan.uses_teacher else {}
                with self.precision.autocast():
                    output = self.model(**batch["inputs"])
                    terms = self._terms(output, batch, targets, plan.weights)
                    loss = combine(terms, plan.weights)
                self.precision.backward(loss / count)
            finite &= torch.isfinite(loss.detach())
            for name, value in {"loss": loss, **terms}.items():
                means[name] = means.get(name, 0) + value.detach().float() / count
        return means, finite, rows

    def _everywhere(self, flag: torch.Tensor) -> bool:
        """``True`` when ``flag`` holds on every process."""
        if self.world > 1:
            flag = self.accelerator.reduce(flag.float(), "sum") == self.world
        return bool(flag)

    def _update(self, finite: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
        """Clip and step, unless some process saw a non-finite loss or gradient norm."""
        grad_norm = self.precision.unscale_and_clip(
            self.optimizer, self.student.parameters(), self.training.max_grad_norm
        )
        if grad_norm is not None and self.precision.scaler is None:
            finite = finite & torch.isfinite(grad_norm)  # fp16 overflow is the scaler's business
        ok = self._everywhere(finite)
        self.precision.step(self.optimizer, skip=not ok)
        self.optimizer.zero_grad(set_to_none=True)
        return ok, grad_norm

    # ---------------------------------------------------------------- evaluation and saving

    def _evaluate(self) -> dict[str, float]:
        """Metrics computed on the main process (exact for any metric) and shared with the rest."""
        holder: list[Any] = [None]
        if self.accelerator.is_main_process:
            holder[0] = evaluate_model(
                self.accelerator.unwrap_model(self.model),
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

    def _is_better(self, metrics: dict[str, float]) -> bool:
        best = self.progress.best_metrics
        if best is None:
            return True
        value, incumbent = metrics[self.metric], best[self.metric]
        return value > incumbent if self.higher_is_better else value < incumbent

    def _best_path(self) -> Path:
        return self.checkpoints / checkpoint_name(self.progress.best_step or 0)

    def _save(self) -> Path:
        """Checkpoint the current state (the main process writes; every process takes part)."""
        rng_states = gather_object([capture_rng()]) if self.world > 1 else [capture_rng()]
        guidance_state = self.schedule.state_dict()
        path = self.checkpoints / checkpoint_name(self.progress.step)
        if self.accelerator.is_main_process:
            parts: dict[str, Any] = {
                "model": self.accelerator.unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
            }
            if guidance_state:
                parts["guidance"] = guidance_state
            meta = {
                "progress": asdict(self.progress),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.precision.state_dict(),
                "rng": rng_states,
                "total_steps": self.total_steps,
                "world_size": self.world,
            }
            save_checkpoint(self.checkpoints, self.progress.step, parts, meta)
            keep = [self._best_path()] if self.evaluation.select_best and self.progress.best_step else []
            prune(self.checkpoints, self.training.keep_last, keep)
        self.accelerator.wait_for_everyone()
        return path

    def _restore(self) -> bool:
        """Load the newest usable checkpoint; ``False`` when there is none."""
        checkpoint = latest_checkpoint(self.checkpoints, self.warnings.append)
        if checkpoint is None:
            self.warnings.append(f"resume: no checkpoint in {self.checkpoints}, starting from scratch")
            return False
        meta = checkpoint.meta
        self.accelerator.unwrap_model(self.model).load_state_dict(checkpoint.part("model", self.device))
        self.optimizer.load_state_dict(checkpoint.part("optimizer", self.device))
        self.scheduler.load_state_dict(meta["scheduler"])
        self.precision.load_state_dict(meta["scaler"])
        if checkpoint.has_part("guidance"):
            self.schedule.load_state_dict(checkpoint.part("guidance", self.device))
        self.progress = _Progress(**meta["progress"])
        if meta["total_steps"] != self.total_steps:
            self.warnings.append(
                f"resume: {checkpoint.path} was made for {meta['total_steps']} steps, this run "
                f"has {self.total_steps}; the learning-rate schedule changes"
            )
        if len(meta["rng"]) == self.world:
            restore_rng(meta["rng"][self.rank])
        else:
            self.warnings.append(
                f"resume: {checkpoint.path} was made by {len(meta['rng'])} processes, this run has "
                f"{self.world}; random streams start afresh"
            )
        return True

    # ---------------------------------------------------------------- the loop

    def _step(self, micro_batches: list[Any], updates: int, log: Logbook) -> None:
        step = self.progress.step
        plan = self.schedule.plan(step)
        means, finite, rows = self._forward_backward(micro_batches, plan)
        lr = self.scheduler.get_last_lr()[0]
        ok, grad_norm = self._update(finite)
        self.scheduler.step()
        self.schedule.after_step(step)
        self.progress.step += 1
        self.progress.position += 1
        step = self.progress.step
        epoch = self.progress.epoch + self.progress.position / updates
        self.window.rows += rows * self.world
        if ok:
            self.progress.nonfinite_streak = 0
            self.window.add(means if grad_norm is None else {**means, "grad_norm": grad_norm.float()})
        else:
            self._skipped(log, step, {"epoch": epoch, "lr": lr, **{k: float(v) for k, v in means.items()}})
        if step % self.training.log_every == 0 or step == self.total_steps:
            self._log_window(log, step, epoch, lr)
        if self.settings.on_step_end is not None:
            model = self.accelerator.unwrap_model(self.model)
            main = self.accelerator.is_main_process
            self.settings.on_step_end(StepEnd(step, self.total_steps, model, main))
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
        values: dict[str, float] = {}
        if window.steps:
            stacked = torch.stack([window.sums[name] / window.steps for name in names])
            if self.world > 1:
                stacked = self.accelerator.reduce(stacked, "mean")
            values = dict(zip(names, stacked.tolist()))
        elapsed = time.perf_counter() - window.started
        speed = window.rows / elapsed if elapsed > 0 else 0.0
        log.record("train", step, {"epoch": epoch, "lr": lr, **values, "samples_per_s": speed})
        log.advance({**values, "samples/s": speed})
        self.window = _Window()

    def _evaluate_and_save(self, step: int, epoch: float, log: Logbook) -> None:
        every = self.evaluation.every
        final = step == self.total_steps
        evaluated = final or (every is not None and step % every == 0)
        if evaluated:
            metrics = self._evaluate()
            better = self._is_better(metrics)
            if better:
                self.progress.best_step, self.progress.best_metrics = step, metrics
            self.progress.last_metrics = metrics
            log.record("eval", step, {"epoch": epoch, "metrics": metrics, "best": better})
        save_every = self.training.save_every
        if evaluated or (save_every is not None and step % save_every == 0):
            self._save()

    def run(self, resume: bool) -> TrainResult:
        started = time.perf_counter()
        if self.accelerator.is_main_process:
            remove_temporaries(self.checkpoints)
        self.accelerator.wait_for_everyone()
        resumed = resume and self._restore()
        log = Logbook(
            self.output_dir,
            self.accelerator,
            total_steps=self.total_steps,
            start_step=self.progress.step,
            resumed=resumed,
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
                self._step(group, updates, log)
            if self.progress.position >= updates:
                self.progress.epoch += 1
                self.progress.position = 0

    def _result(self, wall_seconds: float) -> TrainResult:
        progress = self.progress
        assert progress.best_step is not None and progress.best_metrics and progress.last_metrics
        select_best = self.evaluation.select_best and progress.best_step != progress.step
        if select_best:
            best = open_checkpoint(self._best_path()).part("model", self.device)
            self.accelerator.unwrap_model(self.model).load_state_dict(best)
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
            last_checkpoint=self.checkpoints / checkpoint_name(progress.step),
            best_checkpoint=self._best_path(),
            trained_teacher=self.schedule.trained_teacher(),
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
    settings = _Settings(
        training, evaluation, loss, Path(output_dir), seed, guidance, extractor, on_step_end
    )
    return _Run(student, task, data, settings).run(resume)
