"""The state of a training run: its progress, its checkpoints and the choice of the best one.

A checkpoint holds the student's weights, the optimizer, the guidance schedule's state (a
separate part, never inside the student's file), the LR schedule, the loss scaler, every
process's random streams and the :class:`Progress`, so a resumed run continues bitwise.
Under FSDP the weights and the optimizer state are saved as each process's pieces (see
:mod:`.shards`); under DeepSpeed as DeepSpeed's own files (see :mod:`.zero_state`). Either
resumes with the same number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..contracts import GuidanceSchedule
from ..errors import CheckpointError
from ..layout import step_name
from .checkpoints import (
    Checkpoint,
    ShardGroup,
    latest_checkpoint,
    open_checkpoint,
    prune,
    save_checkpoint,
    save_sharded_checkpoint,
)
from .layouts import is_sharded, is_zero
from .precision import Precision
from .rng import capture_rng, restore_rng
from .shards import load_local_state, local_state
from .zero_state import load_engine, save_engine


@dataclass
class Progress:
    """The loop's position and bookkeeping, saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    #: optimizer steps done in the current epoch
    position: int = 0
    nonfinite_streak: int = 0
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    last_metrics: dict[str, float] | None = None


def is_better(
    metrics: dict[str, float], best: dict[str, float] | None, metric: str, higher_is_better: bool
) -> bool:
    """Whether ``metrics`` beat the best so far on ``metric`` (anything beats nothing)."""
    if best is None:
        return True
    value, incumbent = metrics[metric], best[metric]
    return value > incumbent if higher_is_better else value < incumbent


class Checkpointer:
    """Saves and restores everything a resumed run needs, in one run's checkpoint directory."""

    def __init__(
        self,
        directory: Path,
        accelerator: Accelerator,
        *,
        model: torch.nn.Module,
        optimizer: Optimizer,
        scheduler: LRScheduler,
        precision: Precision,
        schedule: GuidanceSchedule,
        total_steps: int,
    ):
        self.directory = directory
        self.accelerator = accelerator
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.precision, self.schedule, self.total_steps = precision, schedule, total_steps
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.sharded = is_sharded(accelerator)
        self.zero = is_zero(accelerator)

    def path(self, step: int) -> Path:
        """Where the checkpoint of ``step`` is (or would be) saved."""
        return self.directory / step_name(step)

    def save(self, progress: Progress, *, keep_last: int, keep: Collection[Path] = ()) -> Path:
        """Checkpoint the current state (the main process writes; every process takes part).

        Older checkpoints beyond the newest ``keep_last`` are removed, except those in ``keep``.
        """
        rng_states = gather_object([capture_rng()]) if self.world > 1 else [capture_rng()]
        guidance_state = self.schedule.state_dict()
        parts: dict[str, Any] = {"guidance": guidance_state} if guidance_state else {}
        if not (self.sharded or self.zero) and self.accelerator.is_main_process:
            parts["model"] = self.accelerator.unwrap_model(self.model).state_dict()
            parts["optimizer"] = self.optimizer.state_dict()
        meta = {
            "progress": asdict(progress),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
            "rng": rng_states,
            "total_steps": self.total_steps,
            "world_size": self.world,
        }
        if self.sharded:
            pieces = local_state(self.model, _torch_optimizer(self.optimizer))
            save_sharded_checkpoint(self.directory, progress.step, parts, meta, pieces, self._group())
        elif self.zero:
            save = partial(save_engine, self.model)
            save_sharded_checkpoint(self.directory, progress.step, parts, meta, {}, self._group(), foreign=save)
        elif self.accelerator.is_main_process:
            save_checkpoint(self.directory, progress.step, parts, meta)
        if self.accelerator.is_main_process:
            prune(self.directory, keep_last, keep)
        self.accelerator.wait_for_everyone()
        return self.path(progress.step)

    def _group(self) -> ShardGroup:
        def share(value: Any) -> Any:
            holder = [value]
            broadcast_object_list(holder)
            return holder[0]

        return ShardGroup(self.rank, self.world, share, lambda value: gather_object([value]))

    def _load_student(self, checkpoint: Checkpoint, *, with_optimizer: bool) -> None:
        """The student's weights (and optimizer state) of ``checkpoint``, whole or in pieces."""
        device = self.accelerator.device
        if self.zero:
            self._load_engine(checkpoint)
            return
        if not self.sharded:
            self.accelerator.unwrap_model(self.model).load_state_dict(checkpoint.part("model", device))
            if with_optimizer:
                self.optimizer.load_state_dict(checkpoint.part("optimizer", device))
            return
        if checkpoint.shard_count != self.world:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} holds the student in {checkpoint.shard_count or 'no'} "
                f"pieces; this sharded run has {self.world} processes: resume with as many"
            )
        names = ("model", "optimizer") if with_optimizer else ("model",)
        state = {name: checkpoint.shard(name, self.rank, device) for name in names}
        load_local_state(self.model, _torch_optimizer(self.optimizer), state)

    def _load_engine(self, checkpoint: Checkpoint) -> None:
        """DeepSpeed's state of ``checkpoint``, made by as many processes as this run has."""
        saved = checkpoint.meta["world_size"]
        if saved != self.world:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} holds DeepSpeed's state of {saved} processes; this "
                f"run has {self.world}: resume with as many"
            )
        load_engine(self.model, checkpoint.path)

    def restore(self, warn: Callable[[str], None]) -> Progress | None:
        """Load the newest usable checkpoint and return its progress; ``None`` when there is none."""
        checkpoint = latest_checkpoint(self.directory, warn)
        if checkpoint is None:
            warn(f"resume: no checkpoint in {self.directory}, starting from scratch")
            return None
        device = self.accelerator.device
        meta = checkpoint.meta
        self._load_student(checkpoint, with_optimizer=True)
        self.scheduler.load_state_dict(meta["scheduler"])
        self.precision.load_state_dict(meta["scaler"])
        if checkpoint.has_part("guidance"):
            self.schedule.load_state_dict(checkpoint.part("guidance", device))
        if meta["total_steps"] != self.total_steps:
            warn(
                f"resume: {checkpoint.path} was made for {meta['total_steps']} steps, this run "
                f"has {self.total_steps}; the learning-rate schedule changes"
            )
        if len(meta["rng"]) == self.world:
            restore_rng(meta["rng"][self.rank])
        else:
            warn(
                f"resume: {checkpoint.path} was made by {len(meta['rng'])} processes, this run has "
                f"{self.world}; random streams start afresh"
            )
        return Progress(**meta["progress"])

    def load_weights(self, step: int) -> None:
        """Put the student weights of the checkpoint of ``step`` back into the model."""
        self._load_student(open_checkpoint(self.path(step)), with_optimizer=False)


def _torch_optimizer(optimizer: Optimizer) -> Optimizer:
    """The optimizer itself, out of accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
