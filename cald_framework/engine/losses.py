"""The three loss terms of CALD: task loss, logit distillation (KD) and layerwise distillation (LD).

``L = a_task * L_task + a_kd * KD + a_ld * LD``. Each term is returned unweighted so that it
can be logged on its own; :func:`combine` applies the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..contracts import ExtractedStates, LossWeights
from ..errors import CaldError
from ..spec.sections import GuidanceSection

LdReduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class LossConfig:
    """How the distillation terms are computed (the ``[guidance]`` settings shared by all modes)."""

    weights: LossWeights = LossWeights()
    temperature: float = 2.0
    #: multiply KD by ``T**2`` (the paper's NLP code did; its LM and speech code did not)
    kd_scale_t2: bool = True
    ld_reduction: LdReduction = "mean"

    @classmethod
    def from_section(cls, section: GuidanceSection) -> LossConfig:
        return cls(
            weights=LossWeights(section.alpha_task, section.alpha_kd, section.alpha_ld),
            temperature=section.temperature,
            kd_scale_t2=section.kd_scale_t2,
            ld_reduction=section.ld_reduction,
        )


def _loss_dtype(tensor: torch.Tensor) -> torch.dtype:
    """At least float32, so that bf16 activations do not make the losses coarse."""
    return torch.promote_types(tensor.dtype, torch.float32)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    temperature: float,
    scale_t2: bool,
) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` summed over classes.

    Sequence-level logits ``[B, C]`` average over the batch (``batchmean``); token-level logits
    ``[B, T, C]`` average over the positions where ``mask`` is ``True`` (all when ``None``).
    """
    if student_logits.shape != teacher_logits.shape:
        raise CaldError(
            f"KD: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    dtype = _loss_dtype(student_logits)
    log_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    per_position = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
    if mask is None:
        loss = per_position.mean()
    else:
        weights = mask.to(per_position.dtype)
        loss = (per_position * weights).sum() / weights.sum().clamp_min(1)
    return loss * temperature**2 if scale_t2 else loss


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid positions ``mask`` (``[B, T]``) and every feature."""
    dtype = _loss_dtype(student)
    squared = (student.to(dtype) - teacher.to(dtype)).pow(2).sum(-1)
    weights = mask.to(dtype)
    count = weights.sum().clamp_min(1) * student.shape[-1]
    return (squared * weights).sum() / count


def ld_per_layer(student: ExtractedStates, teacher: ExtractedStates) -> torch.Tensor:
    """``[L]``: :func:`masked_mse` of each distilled layer on the student's valid positions."""
    if len(student.layers) != len(teacher.layers):
        raise CaldError(
            f"LD: the student gives {len(student.layers)} distilled layers and the teacher "
            f"{len(teacher.layers)}; both must use the same extractor"
        )
    per_layer = []
    for index, (s, t) in enumerate(zip(student.layers, teacher.layers)):
        if s.shape != t.shape:
            raise CaldError(
                f"LD: layer {index} has student states {tuple(s.shape)} and teacher states "
                f"{tuple(t.shape)}"
            )
        per_layer.append(masked_mse(s, t, student.mask))
    return torch.stack(per_layer)


def reduce_layers(per_layer: torch.Tensor, reduction: LdReduction) -> torch.Tensor:
    """The layer loss from its per-layer values: their sum or their mean."""
    return per_layer.sum() if reduction == "sum" else per_layer.mean()


def ld_loss(
    student: ExtractedStates, teacher: ExtractedStates, reduction: LdReduction
) -> torch.Tensor:
    """Per-layer :func:`masked_mse` on the student's valid positions, combined over layers."""
    return reduce_layers(ld_per_layer(student, teacher), reduction)


def combine(terms: Mapping[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of the terms that were computed (keys ``task``, ``kd``, ``ld``)."""
    factor = {"task": weights.task, "kd": weights.kd, "ld": weights.ld}
    weighted = [factor[name] * value for name, value in terms.items()]
    if not weighted:
        raise CaldError("no loss term is active in this step: every alpha is zero")
    return sum(weighted[1:], weighted[0])
