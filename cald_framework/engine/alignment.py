"""Layer-local alignment: each mixer learns to reproduce the attention it replaced.

Teacher-forced: one forward of the model the student was converted from records, at every
converted layer, the input and the output of its attention; each mixer then runs on that
input and is scored against that output, every layer from the same forward. Nothing but the
mixers is trained (the rest of the student is never even run), so alignment cannot move the
transferred weights.

The score of a layer is its *relative error* over the valid positions of a batch:
``sum |mixer - attention|^2 / sum |attention|^2``. Unlike a plain MSE it does not depend on
the scale of each layer's attention output, so layers weigh alike and the same number ranks
layers by how well they convert (:mod:`cald_framework.analysis.layers`). The loss is the sum
over layers: each mixer's gradient is that of its own error, however many layers there are.

:func:`align` is the loop with checkpoints in ``<run>/alignment/``, so a run killed during
alignment resumes bitwise, and a finished alignment is not redone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contracts import TaskData
from ..errors import CaldError
from ..layout import METRICS_FILE
from ..modeling import CaldModel, keep_input, keep_output
from ..spec.sections import TrainingSection
from .batching import epoch_batches, make_loader, to_device
from .checkpoints import latest_checkpoint, prune, remove_temporaries, save_checkpoint
from .logbook import append_event, keep_events
from .optim import build_optimizer
from .rng import capture_rng, restore_rng, seed_everything

ALIGN_EVENT = "align"


@dataclass(frozen=True)
class LayerPair:
    """A converted layer: the teacher's attention and the student mixer that replaced it."""

    layer_index: int
    attention: nn.Module
    mixer: nn.Module


def layer_pairs(teacher: CaldModel, student: CaldModel) -> list[LayerPair]:
    """The converted layers of ``student`` with the attention of ``teacher`` at the same place.

    Slots of the student that still hold attention (layers kept unconverted) are left out.
    """
    teacher_slots = teacher.family.attention_slots(teacher.backbone)
    student_slots = student.family.attention_slots(student.backbone)
    if len(teacher_slots) != len(student_slots):
        raise CaldError(
            f"alignment: the teacher has {len(teacher_slots)} attention slots, "
            f"the student {len(student_slots)}"
        )
    return [
        LayerPair(ours.layer_index, theirs.module, ours.module.mixer)
        for theirs, ours in zip(teacher_slots, student_slots)
        if isinstance(getattr(ours.module, "mixer", None), nn.Module)
    ]


@contextmanager
def _attention_io(
    pairs: Sequence[LayerPair],
) -> Iterator[tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]]:
    """Record each paired attention's input and output (by layer index) during one forward."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    for pair in pairs:
        index = pair.layer_index
        handles.append(
            pair.attention.register_forward_pre_hook(
                partial(keep_input, inputs, index), with_kwargs=True
            )
        )
        handles.append(
            pair.attention.register_forward_hook(partial(keep_output, outputs, index))
        )
    try:
        yield inputs, outputs
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class LayerErrors:
    """Squared error and squared attention norm of one layer, summed over valid positions."""

    error: torch.Tensor
    norm: torch.Tensor

    @property
    def relative(self) -> torch.Tensor:
        """``error / norm``: 0 for an exact mixer, about 1 for one that outputs nothing."""
        return self.error / self.norm.clamp_min(torch.finfo(self.norm.dtype).tiny)


def masked_errors(mixed: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> LayerErrors:
    """:class:`LayerErrors` of ``mixed`` against ``attention`` (``[B, T, D]``) where ``mask``.

    Summed in at least float32, so half-precision outputs do not round the sums away.
    """
    dtype = torch.promote_types(attention.dtype, torch.float32)
    target = attention[mask].to(dtype)
    return LayerErrors((mixed[mask].to(dtype) - target).pow(2).sum(), target.pow(2).sum())


def teacher_forced(
    teacher: CaldModel, pairs: Sequence[LayerPair], inputs: Mapping[str, torch.Tensor]
) -> list[LayerErrors]:
    """Each pair's errors on ``inputs``: the teacher runs once, each mixer on its attention's input.

    The mixers get the padding mask the student would get (``None`` when nothing is padded).
    """
    mask = teacher.family.hidden_mask(teacher.backbone, inputs)
    with torch.no_grad(), _attention_io(pairs) as (attention_in, attention_out):
        teacher(**inputs)
    padding = None if bool(mask.all()) else mask
    return [
        masked_errors(
            pair.mixer(attention_in[pair.layer_index], padding),
            attention_out[pair.layer_index],
            mask,
        )
        for pair in pairs
    ]


def residuals(
    teacher: CaldModel, pairs: Sequence[LayerPair], batches: Iterable[Mapping[str, torch.Tensor]]
) -> list[float]:
    """Each pair's relative error over all of ``batches`` (errors and norms summed first)."""
    totals: list[LayerErrors] | None = None
    with torch.no_grad():
        for inputs in batches:
            found = teacher_forced(teacher, pairs, inputs)
            totals = found if totals is None else [
                LayerErrors(old.error + new.error, old.norm + new.norm)
                for old, new in zip(totals, found)
            ]
    if totals is None:
        raise CaldError("alignment: no batches to measure the layers on")
    return [float(errors.relative) for errors in totals]


class Aligner:
    """One optimizer over the mixers of ``pairs``; :meth:`step` aligns them on one batch."""

    def __init__(
        self,
        teacher: CaldModel,
        pairs: Sequence[LayerPair],
        training: TrainingSection,
        lr: float,
    ):
        if not pairs:
            raise CaldError("alignment: the student has no mixers to align")
        self.teacher, self.pairs, self.training = teacher, list(pairs), training
        self.mixers = nn.ModuleList(pair.mixer for pair in pairs)
        self.optimizer = build_optimizer(self.mixers, training, lr)

    @property
    def layers(self) -> list[int]:
        return [pair.layer_index for pair in self.pairs]

    def step(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One update of every mixer; returns the per-layer relative errors before it."""
        errors = torch.stack([found.relative for found in teacher_forced(self.teacher, self.pairs, inputs)])
        self.optimizer.zero_grad(set_to_none=True)
        errors.sum().backward()
        if self.training.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.mixers.parameters(), self.training.max_grad_norm)
        self.optimizer.step()
        return errors.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"mixers": self.mixers.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mixers.load_state_dict(state["mixers"])
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass
class AlignProgress:
    """Where the alignment loop is: steps done, and the epoch and batch of the training data."""

    step: int = 0
    epoch: int = 0
    position: int = 0


def alignment_batches(
    data: TaskData, training: TrainingSection, seed: int, progress: AlignProgress
) -> Iterator[dict[str, Any]]:
    """Training batches in the trainer's seeded order from ``progress`` on, epoch after epoch.

    ``progress`` follows the batches handed out, so a checkpoint of it resumes at the next one.
    Every process takes the same batches: alignment is cheap and runs whole on each process.
    """
    while True:
        batches = epoch_batches(data, training, seed=seed, epoch=progress.epoch, rank=0, world=1)
        remaining = batches[progress.position :]
        seed_of_epoch = seed + progress.epoch
        for batch in make_loader(data.train, remaining, data.collate, training.num_workers, seed_of_epoch):
            progress.position += 1
            yield batch
        progress.epoch, progress.position = progress.epoch + 1, 0


@dataclass
class AlignmentResult:
    """What :func:`align` did: the layers, their last logged errors and the metrics after it."""

    steps: int
    layers: list[int]
    final_errors: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    #: the time this process spent aligning (a resumed run counts only its own part)
    wall_seconds: float = 0.0


@dataclass
class _Window:
    """Per-layer errors summed since the last logged step."""

    sums: torch.Tensor | None = None
    steps: int = 0

    def add(self, errors: torch.Tensor) -> None:
        self.sums = errors if self.sums is None else self.sums + errors
        self.steps += 1

    def means(self) -> list[float]:
        assert self.sums is not None
        return (self.sums / self.steps).tolist()


@dataclass
class AlignmentRun:
    """Where and how :func:`align` runs: its checkpoint folder and the run's ``metrics.jsonl``."""

    checkpoints: Path
    output_dir: Path
    training: TrainingSection
    steps: int
    lr: float
    seed: int
    #: whether this process writes checkpoints and events (the main process)
    main: bool = True

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / METRICS_FILE

    def log(self, step: int, layers: list[int], errors: list[float], **extra: Any) -> None:
        """An ``align`` event: the mean of the per-layer errors and each layer's error."""
        if self.main:
            values = {"align_step": step, "align_steps": self.steps, "lr": self.lr}
            values |= {"loss": sum(errors) / len(errors), "layers": layers, "align_layers": errors}
            append_event(self.metrics_path, ALIGN_EVENT, 0, {**values, **extra})

    def save(self, progress: AlignProgress, aligner: Aligner, meta: Mapping[str, Any]) -> None:
        if self.main:
            state = {"progress": asdict(progress), "rng": capture_rng(), **meta}
            save_checkpoint(self.checkpoints, progress.step, aligner.state_dict(), state)
            prune(self.checkpoints, keep_last=1)


def _restore(run: AlignmentRun, aligner: Aligner, device: torch.device) -> tuple[AlignProgress, dict[str, Any]]:
    """The newest alignment checkpoint loaded into ``aligner``, or a fresh start."""
    checkpoint = latest_checkpoint(run.checkpoints, lambda message: None)
    if checkpoint is None:
        return AlignProgress(), {}
    aligner.load_state_dict(
        {"mixers": checkpoint.part("mixers", device), "optimizer": checkpoint.part("optimizer", device)}
    )
    restore_rng(checkpoint.meta["rng"])
    progress = AlignProgress(**checkpoint.meta["progress"])
    outcome = {key: checkpoint.meta[key] for key in ("final_errors", "metrics") if key in checkpoint.meta}
    if run.main:
        keep_events(
            run.metrics_path,
            lambda event: event["event"] == ALIGN_EVENT and event["align_step"] <= progress.step,
        )
    return progress, outcome


def align(
    aligner: Aligner,
    data: TaskData,
    run: AlignmentRun,
    *,
    device: torch.device,
    resume: bool,
    evaluate: Callable[[], dict[str, float]],
) -> AlignmentResult:
    """Align for ``run.steps`` steps, checkpointing every ``training.save_every`` and at the end.

    With ``resume`` the newest checkpoint in ``run.checkpoints`` is continued; a finished one
    only puts its mixers back. ``evaluate`` gives the student's metrics after alignment, kept
    in the last checkpoint so that a resumed run reports them without evaluating again.
    """
    started = time.perf_counter()
    training = run.training
    if run.main:
        remove_temporaries(run.checkpoints)
    progress, meta = _restore(run, aligner, device) if resume else (AlignProgress(), {})
    if progress.step == 0:
        seed_everything(run.seed)
    errors: list[float] = meta.get("final_errors", [])
    window = _Window()
    batches = alignment_batches(data, training, run.seed, progress)
    while progress.step < run.steps:
        window.add(aligner.step(to_device(next(batches)["inputs"], device)))
        progress.step += 1
        last = progress.step == run.steps
        if last or progress.step % training.log_every == 0:
            errors = window.means()
            window = _Window()
            extra = {"metrics": evaluate()} if last else {}
            run.log(progress.step, aligner.layers, errors, **extra)
            meta = {"final_errors": errors, **extra}
        if last or (training.save_every is not None and progress.step % training.save_every == 0):
            run.save(progress, aligner, meta)
    metrics = dict(meta.get("metrics", {}))
    return AlignmentResult(
        run.steps, aligner.layers, errors, metrics, time.perf_counter() - started
    )
