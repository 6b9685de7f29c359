"""LoRA on a student's transferred weights, through ``peft``, and the merge that removes it.

Conversion leaves two kinds of weights in a student: the new mixers (and their shared
parameters), which start from scratch and must train fully, and everything transferred from
the teacher. :func:`add_lora` freezes the transferred weights and injects adapters into the
transferred linear layers it targets; the mixers and the task head stay trainable. Freezing is
done with ``requires_grad``, so the optimizer sees the trainable parameters only. The adapters
are ordinary parameters of the model, so checkpoints hold them like any other weight.
:func:`merge_lora` folds them into the base weights and removes every trace of ``peft``, so the
saved student loads with :meth:`CaldModel.from_pretrained` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .errors import CaldError
from .modeling import CaldModel
from .spec.sections import LoraSection


@dataclass(frozen=True)
class LoraSummary:
    """What LoRA left trainable: the adapted layers and the parameter counts."""

    adapted: list[str]
    trainable_parameters: int
    total_parameters: int


def new_modules(student: CaldModel) -> list[nn.Module]:
    """The modules that train fully: every mixer, the mixers' shared parameters, the head."""
    slots = [slot.module for slot in student.family.attention_slots(student.backbone)]
    mixers = [slot.mixer for slot in slots if isinstance(getattr(slot, "mixer", None), nn.Module)]
    return [*mixers, student.shared, *([student.head] if student.head is not None else [])]


def transferred_linears(student: CaldModel) -> list[str]:
    """Names of the ``nn.Linear`` layers transferred from the teacher (outside the new modules)."""
    inside = {id(module) for owner in new_modules(student) for module in owner.modules()}
    return [
        name
        for name, module in student.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in inside
    ]


def lora_targets(student: CaldModel, patterns: Sequence[str] | None) -> list[str]:
    """The transferred linear layers that ``patterns`` name (peft's rule: the whole name or a
    suffix after a dot); all of them without patterns. A pattern naming none is an error."""
    candidates = transferred_linears(student)
    if patterns is None:
        return candidates
    for pattern in patterns:
        if not any(_matches(name, pattern) for name in candidates):
            shown = ", ".join(candidates[:6]) + (", ..." if len(candidates) > 6 else "")
            raise CaldError(
                f"student.lora.target_modules: {pattern!r} matches no transferred linear layer "
                f"(they are: {shown})"
            )
    return [name for name in candidates if any(_matches(name, p) for p in patterns)]


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith(f".{pattern}")


def add_lora(student: CaldModel, lora: LoraSection) -> LoraSummary:
    """Inject adapters into ``student`` in place and freeze its transferred weights.

    The adapters' random initialisation is drawn from torch's global generator: callers seed
    it, so a resumed run builds the same model as the interrupted one.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise CaldError("student.lora needs peft: pip install 'cald-framework[lora]'") from None
    targets = lora_targets(student, lora.target_modules)
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets
    )
    inject_adapter_in_model(config, student)  # freezes everything but the adapters
    for module in new_modules(student):
        module.requires_grad_(True)
    parameters = list(student.parameters())
    return LoraSummary(
        adapted=targets,
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        total_parameters=sum(p.numel() for p in parameters),
    )


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter of ``model`` into its base layer and put the base layers back, in
    place; a model without adapters is returned unchanged. Returns ``model``."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # without peft no model has adapters
        return model
    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in adapted:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    model.requires_grad_(True)
    return model
