"""One optimizer step of the student: teacher targets, loss terms, backward and update.

For each of the step's micro-batches the guidance schedule may run its teacher (once, reused
for the KD and LD targets), the student runs, and the weighted loss divided by the number of
micro-batches is back-propagated through the accelerator; under DDP gradients are synchronised
across processes only on the last micro-batch (FSDP reduces each micro-batch's shards). The
accelerator clips the update (it knows sharded gradients); the update is skipped on every
process when the loss or the gradient norm is not finite on any of them (fp16 overflow is left to the loss scaler).
A DeepSpeed engine back-propagates, clips and steps itself, under the same rules (:mod:`.zero_step`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from ..contracts import (
    CaldOutput,
    ExtractedStates,
    Extractor,
    GuidanceSchedule,
    LossWeights,
    StepPlan,
    Task,
)
from ..errors import CaldError
from .batching import batch_rows, to_device
from .layouts import is_zero
from .losses import LossConfig, combine, kd_loss, ld_per_layer, reduce_layers
from .precision import Precision
from .zero_step import zero_backward, zero_update


#: the name under which a step's losses, and ``metrics.jsonl``, give the layer loss of each layer
LD_LAYERS = "ld_layers"


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did, for the loop's logging and bookkeeping."""

    #: optimizer steps done, this one included
    step: int
    #: the learning rate of this step's update
    lr: float
    #: ``False`` when the update was skipped (a loss or gradient norm was not finite)
    applied: bool
    #: ``loss`` (weighted) and each computed term, means over the micro-batches, detached;
    #: with LD also :data:`LD_LAYERS`, the ``[L]`` layer loss of each distilled layer
    losses: dict[str, torch.Tensor]
    #: the gradient norm before clipping (``None`` without clipping)
    grad_norm: torch.Tensor | None
    #: rows this process trained on
    rows: int
    #: what the guidance schedule's ``observe`` asked to record for this step, if anything
    guidance_event: Mapping[str, Any] | None = None


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor that autograd may save: inference-mode results are cloned, others detached."""
    return tensor.clone() if tensor.is_inference() else tensor.detach()


def _whole(norm: torch.Tensor | None) -> torch.Tensor | None:
    """A gradient norm as a plain tensor (sharded gradients give a replicated distributed one)."""
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def apply_update(
    precision: Precision,
    optimizer: Optimizer,
    parameters: Iterable[nn.Parameter],
    max_norm: float | None,
    *,
    finite: torch.Tensor | None = None,
    agree: Callable[[torch.Tensor], bool] = bool,
    clip: Callable[[Iterable[nn.Parameter], float], torch.Tensor] = torch.nn.utils.clip_grad_norm_,
) -> tuple[bool, torch.Tensor | None]:
    """Clip with ``clip`` and step, unless ``finite`` or the gradient norm says something was
    not finite.

    ``agree`` turns this process's flag into the decision, which every process must share.
    Returns whether the update was applied and the norm before clipping.
    """
    norm = _whole(precision.unscale_and_clip(optimizer, parameters, max_norm, clip))
    if norm is not None and precision.scaler is None:  # fp16 overflow is the scaler's business
        norm_finite = torch.isfinite(norm)
        finite = norm_finite if finite is None else finite & norm_finite
    applied = finite is None or agree(finite)
    precision.step(optimizer, skip=not applied)
    optimizer.zero_grad(set_to_none=True)
    return applied, norm


class StudentStep:
    """The student's share of an optimizer step: targets, losses, backward and update."""

    def __init__(
        self,
        *,
        model: nn.Module,
        parameters: Sequence[nn.Parameter],
        task: Task,
        loss: LossConfig,
        extractor: Extractor | None,
        schedule: GuidanceSchedule,
        optimizer: Optimizer,
        precision: Precision,
        accelerator: Accelerator,
        max_grad_norm: float | None,
    ):
        self.model, self.parameters = model, parameters
        self.task, self.loss, self.extractor, self.schedule = task, loss, extractor, schedule
        self.optimizer, self.precision, self.accelerator = optimizer, precision, accelerator
        self.max_grad_norm = max_grad_norm
        self.device = accelerator.device
        self.world = accelerator.num_processes
        self.zero = is_zero(accelerator)

    def teacher_targets(self, plan: StepPlan, batch: Mapping[str, Any]) -> dict[str, Any]:
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

    def terms(
        self, output: CaldOutput, batch: Mapping[str, Any], targets: dict[str, Any], weights: LossWeights
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The unweighted loss terms of one micro-batch (task, and KD / LD where targets exist),
        and the ``[L]`` layer loss of each distilled layer (``None`` without LD)."""
        terms: dict[str, torch.Tensor] = {}
        layers = None
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
            layers = ld_per_layer(self.extractor(output), targets["ld"])
            terms["ld"] = reduce_layers(layers, self.loss.ld_reduction)
        return terms, layers

    def accumulate(
        self, micro_batches: Sequence[Any], plan: StepPlan
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """Accumulate gradients over the micro-batches; returns mean terms, a finite flag, rows."""
        if not micro_batches:
            raise CaldError("a training step needs at least one micro-batch")
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
                targets = self.teacher_targets(plan, batch) if plan.uses_teacher else {}
                with self.precision.autocast():
                    output = self.model(**batch["inputs"])
                    terms, layers = self.terms(output, batch, targets, plan.weights)
                    loss = combine(terms, plan.weights)
                self._backward(loss / count, last)
            finite &= torch.isfinite(loss.detach())
            logged = {"loss": loss, **terms}
            if layers is not None:
                logged[LD_LAYERS] = layers
            for name, value in logged.items():
                means[name] = means.get(name, 0) + value.detach().float() / count
        return means, finite, rows

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        if self.zero:
            zero_backward(self.model, loss, last=last)
        else:
            self.accelerator.backward(self.precision.scale(loss))

    def _everywhere(self, flag: torch.Tensor) -> bool:
        """``True`` when ``flag`` holds on every process."""
        if self.world > 1:
            flag = self.accelerator.reduce(flag.float(), "sum") == self.world
        return bool(flag)

    def update(self, finite: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
        """Clip and step, unless some process saw a non-finite loss or gradient norm."""
        if self.zero:
            return zero_update(self.model, self.max_grad_norm)
        return apply_update(
            self.precision,
            self.optimizer,
            self.parameters,
            self.max_grad_norm,
            finite=finite,
            agree=self._everywhere,
            clip=self.accelerator.clip_grad_norm_,
        )
