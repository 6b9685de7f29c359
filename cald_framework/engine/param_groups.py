"""``[[training.param_groups]]``: which parameters train, at which rate, with which decay.

Each parameter goes to the first group whose ``pattern`` (a glob over its name, ``fnmatch``
style: ``*`` also crosses dots) and ``select`` (the conversion's ``"new"`` parameters, or the
``"transferred"`` ones) both match it; parameters no group matches form the default group. A
group that ends up with no parameter is an error naming it, so a typo never silently trains
everything at the default rate.

Each group becomes two optimizer groups, decayed and not: biases, norms and tagged parameters
(:func:`.optim.no_decay_names`) never decay. ``training.weight_decay_on = "new"`` decays only
the new parameters of groups that set no ``weight_decay`` of their own.

``freeze = true`` turns a group's gradients off and leaves it out of the optimizer;
``freeze_steps = N`` keeps it in with a learning rate of 0 for the first N steps (the LR
schedule reads it, so it follows the step counter through a resume). At lr 0 AdamW and
Adafactor leave the weights bitwise unchanged, while their gradients still count in the
clipping norm and in AdamW's moment estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from torch import nn

from ..conversion import created_parameter_names
from ..errors import CaldError
from ..modeling import CaldModel
from ..spec.sections import ParamGroupSection, TrainingSection

#: the optimizer-group key the LR schedule reads: steps during which the group's lr is 0
FREEZE_STEPS = "freeze_steps"


@dataclass
class _Assigned:
    """The parameters one rule took, in model order."""

    rule: ParamGroupSection
    where: str
    named: list[tuple[str, nn.Parameter]]


def new_parameter_names(model: nn.Module) -> set[str]:
    """The parameters the conversion created (none for anything but a converted student)."""
    return created_parameter_names(model) if isinstance(model, CaldModel) else set()


def _matches(rule: ParamGroupSection, name: str, new: set[str]) -> bool:
    if rule.pattern is not None and not fnmatchcase(name, rule.pattern):
        return False
    if rule.select is not None and (name in new) != (rule.select == "new"):
        return False
    return True


def _describe(rule: ParamGroupSection) -> str:
    parts = [f"pattern {rule.pattern!r}"] if rule.pattern is not None else []
    parts += [f"select {rule.select!r}"] if rule.select is not None else []
    return " and ".join(parts)


def _nothing_matched(entry: _Assigned, names: list[str], new: set[str]) -> CaldError:
    rule = entry.rule
    if rule.select == "new" and not new:
        reason = "the model has no parameters the conversion created"
    elif any(_matches(rule, name, new) for name in names):
        reason = "every parameter it matches was taken by an earlier group (the first match wins)"
    else:
        reason = f"it matches no parameter name (names look like {', '.join(names[:3])})"
    return CaldError(f"{entry.where} ({_describe(rule)}) selects nothing: {reason}")


def assign(model: nn.Module, rules: list[ParamGroupSection]) -> list[_Assigned]:
    """The default group first, then one entry per rule; every rule must take a parameter."""
    new = new_parameter_names(model)
    named = list(model.named_parameters())
    entries = [_Assigned(ParamGroupSection(pattern="*"), "default group", [])]
    entries += [_Assigned(rule, f"training.param_groups[{i}]", []) for i, rule in enumerate(rules)]
    for name, param in named:
        owner = next((e for e in entries[1:] if _matches(e.rule, name, new)), entries[0])
        owner.named.append((name, param))
    for entry in entries[1:]:
        if not entry.named:
            raise _nothing_matched(entry, [name for name, _ in named], new)
    return entries


def split_by_decay(
    named: Iterable[tuple[str, nn.Parameter]],
    decays: Callable[[str], bool],
    weight_decay: float,
    extra: Mapping[str, Any] = {},
) -> list[dict[str, Any]]:
    """Two optimizer groups over the trainable parameters of ``named``: those ``decays`` names
    with ``weight_decay``, and the rest with none."""
    trainable = [(name, param) for name, param in named if param.requires_grad]
    return [
        {"params": [p for n, p in trainable if decays(n)], "weight_decay": weight_decay, **extra},
        {"params": [p for n, p in trainable if not decays(n)], "weight_decay": 0.0, **extra},
    ]


def optimizer_groups(
    model: nn.Module, training: TrainingSection, exempt: set[str], lr: float
) -> list[dict[str, Any]]:
    """Optimizer groups for ``training.param_groups`` and ``weight_decay_on``, the default
    group first; the parameters of ``freeze`` groups get their gradients turned off."""
    new = new_parameter_names(model)
    if training.weight_decay_on == "new" and not new:
        raise CaldError(
            "training.weight_decay_on = 'new' needs a converted student: this model has no "
            "parameters the conversion created"
        )
    groups: list[dict[str, Any]] = []
    for entry in assign(model, list(training.param_groups)):
        rule = entry.rule
        if rule.freeze:
            for _, param in entry.named:
                param.requires_grad_(False)
            continue
        only_new = rule.weight_decay is None and training.weight_decay_on == "new"
        decays = partial(_decays, exempt=exempt, new=new if only_new else None)
        extra: dict[str, Any] = {"lr": lr * rule.lr_scale}
        if rule.freeze_steps:
            extra[FREEZE_STEPS] = rule.freeze_steps
        rate = training.weight_decay if rule.weight_decay is None else rule.weight_decay
        groups += split_by_decay(entry.named, decays, rate, extra)
    return groups


def _decays(name: str, *, exempt: set[str], new: set[str] | None) -> bool:
    """Whether ``name`` decays: never when exempt; when ``new`` is given, only if in it."""
    return name not in exempt and (new is None or name in new)
