"""Teacher -> student conversion: attention out, mixers in, every other weight transferred.

:func:`convert` deep-copies a model, asks the mixer plugin for one mixer per converted attention
slot (built from that attention's projections; slots in ``keep_attention`` keep theirs) and returns the student with a
:class:`TransferReport` that accounts for every tensor: copied unchanged, dropped with the
attention it belonged to, or new in a mixer (noting those equal to a dropped attention
tensor). Copied tensors are checked equal to the original, and tensors outside the attention
slots must neither vanish nor appear, so a plugin that touches weights it does not own fails
here rather than silently during training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import write_json_atomic
from .contracts import MixerPlugin, PluginOptions
from .errors import CaldError
from .modeling import CaldModel


class ConversionError(CaldError):
    """A conversion that would lose or alter weights outside the replaced attention."""


@dataclass
class TransferReport:
    """Where every tensor of the converted model came from; names are ``state_dict`` keys."""

    source: str
    mixer: str
    #: ``"teacher"``, or the provenance of the model given as ``init_from``
    initialised_from: str
    #: in both models, values unchanged
    copied: list[str]
    #: in the original only: the replaced attention's tensors
    dropped: list[str]
    #: in the student only: the mixers' (and shared mixer) tensors
    new: list[str]
    #: new tensor -> the dropped attention tensor it equals (projections a mixer kept)
    from_attention: dict[str, str] = field(default_factory=dict)
    #: tensors outside the attention slots that the student lacks (must be empty)
    unexpected_missing: list[str] = field(default_factory=list)
    #: student tensors outside the attention slots and shared modules (must be empty)
    unexpected_new: list[str] = field(default_factory=list)
    original_parameters: int = 0
    student_parameters: int = 0
    #: layers whose attention was kept (copied like any other tensor), in a hybrid student
    kept_attention: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Tensor counts per category and parameter counts of both models."""
        return {
            "copied": len(self.copied),
            "dropped": len(self.dropped),
            "new": len(self.new),
            "from_attention": len(self.from_attention),
            "unexpected_missing": len(self.unexpected_missing),
            "unexpected_new": len(self.unexpected_new),
            "original_parameters": self.original_parameters,
            "student_parameters": self.student_parameters,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}

    def save(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        write_json_atomic(Path(path), self.to_dict(), indent=2)


def convert(
    teacher: CaldModel,
    mixer_plugin: MixerPlugin,
    options: PluginOptions | Mapping[str, Any],
    max_length: int,
    *,
    init_from: CaldModel | None = None,
    keep_attention: Sequence[int] = (),
) -> tuple[CaldModel, TransferReport]:
    """Convert ``teacher`` into a student whose attention is replaced by ``mixer_plugin``.

    ``init_from`` (the "source" initialisation of target-guided training) converts that model
    instead, so the student starts from its weights (mixers from its attention) while
    ``teacher`` stays the model it distils from; both must share family, widths and layers.
    Layers in ``keep_attention`` keep their attention (a hybrid student): its tensors count as
    copied, so the report checks them unchanged. The original model is never modified.
    """
    original = teacher if init_from is None else _compatible(teacher, init_from)
    if original.config.mixer is not None:
        raise ConversionError(
            f"the model to convert already has mixers ({original.config.mixer!r})"
        )
    student = copy.deepcopy(original)
    student.config.max_sequence_length = max_length
    slot_names = _slot_names(student, keep_attention)
    student.install_mixers(
        mixer_plugin, options, with_projections=True, keep_attention=keep_attention
    )
    report = transfer_report(original, student, slot_names)
    report.initialised_from = (
        "teacher" if init_from is None else str(init_from.config.source_model or "init_from")
    )
    bad = report.unexpected_missing + report.unexpected_new
    if bad:
        raise ConversionError(
            f"converting {original.config.source!r} with mixer {mixer_plugin.name!r} changed "
            f"tensors outside the attention slots: {bad[:5]}"
        )
    return student, report


def transfer_report(
    original: CaldModel, student: CaldModel, slot_names: list[str]
) -> TransferReport:
    """Account for every tensor of ``student`` against ``original``.

    ``slot_names`` are the module names of the replaced attention slots; tensors under them may
    be dropped or new, and so may tensors under the student's ``shared`` module.
    """
    before = original.state_dict()
    after = student.state_dict()
    copied = [name for name in after if name in before]
    for name in copied:
        if not torch.equal(before[name], after[name].to(before[name].device)):
            raise ConversionError(
                f"{name} differs from the original after conversion: "
                f"mixer {student.config.mixer!r} modified a weight it does not own"
            )
    dropped = [name for name in before if name not in after]
    new = [name for name in after if name not in before]
    replaced = tuple(f"{slot}." for slot in slot_names)
    return TransferReport(
        source=original.config.source,
        mixer=str(student.config.mixer),
        initialised_from="teacher",
        copied=copied,
        dropped=dropped,
        new=new,
        from_attention=_from_attention(before, after, dropped, new, replaced),
        unexpected_missing=[name for name in dropped if not name.startswith(replaced)],
        unexpected_new=[name for name in new if not name.startswith(replaced + ("shared.",))],
        original_parameters=parameter_count(original),
        student_parameters=parameter_count(student),
        kept_attention=list(student.config.kept_attention),
    )


def _from_attention(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    dropped: list[str],
    new: list[str],
    slots: tuple[str, ...],
) -> dict[str, str]:
    """Map each new tensor to a dropped tensor of the same slot with equal values, if any.

    Constant tensors (e.g. zero biases) are skipped: equal values would say nothing of origin.
    """
    found = {}
    for slot in slots:
        candidates = [name for name in dropped if name.startswith(slot)]
        for name in (name for name in new if name.startswith(slot)):
            tensor = after[name]
            if _is_constant(tensor):
                continue
            match = next(
                (
                    old
                    for old in candidates
                    if before[old].shape == tensor.shape
                    and torch.equal(before[old], tensor.to(before[old].device))
                ),
                None,
            )
            if match is not None:
                found[name] = match
    return found


def _is_constant(tensor: torch.Tensor) -> bool:
    return tensor.numel() < 2 or bool((tensor == tensor.flatten()[0]).all())


def _slot_names(model: CaldModel, keep_attention: Sequence[int]) -> list[str]:
    """Module names of the attention slots that conversion replaces (not the kept ones)."""
    names = {id(module): name for name, module in model.named_modules()}
    return [
        names[id(slot.module)]
        for slot in model.family.attention_slots(model.backbone)
        if slot.layer_index not in keep_attention
    ]


def created_parameter_names(student: CaldModel) -> set[str]:
    """Names of the parameters the conversion created: those of the mixers and of ``shared``.

    Empty for a model without mixers (a teacher).
    """
    if student.config.mixer is None:
        return set()
    prefixes = tuple(f"{slot}." for slot in _slot_names(student, student.config.kept_attention))
    return {
        name
        for name, _ in student.named_parameters()
        if name.startswith(prefixes + ("shared.",))
    }


def parameter_count(model: nn.Module) -> int:
    """The number of parameters of ``model``, each shared tensor counted once."""
    return sum(parameter.numel() for parameter in model.parameters())


def _compatible(teacher: CaldModel, init_from: CaldModel) -> CaldModel:
    """``init_from`` if a student built from it can distil from ``teacher``, else an error."""
    checks = {
        "source": (teacher.config.source, init_from.config.source),
        "head": (teacher.head_spec, init_from.head_spec),
        "width and heads": (
            teacher.family.dimensions(teacher.backbone),
            init_from.family.dimensions(init_from.backbone),
        ),
        "layers": (
            len(teacher.family.layers(teacher.backbone)),
            len(init_from.family.layers(init_from.backbone)),
        ),
    }
    for what, (expected, got) in checks.items():
        if expected != got:
            raise ConversionError(
                f"init_from does not match the teacher: {what} {got!r} != {expected!r}"
            )
    return init_from
