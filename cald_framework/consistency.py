"""Checks that the teachers, tokenizer and task of a run fit together, before any training.

Each mismatch here would otherwise surface late (an index error deep in an embedding) or not
at all (a 3-label teacher quietly trained on a 2-label task), so each gets one line naming
both sides.
"""

from __future__ import annotations

from typing import Any

from .contracts import HeadSpec
from .errors import CheckpointError
from .modeling import CaldModel


def _describe(head: HeadSpec) -> str:
    labels = f" with {head.num_labels} labels" if head.kind != "causal_lm" else ""
    return f"a {head.kind} head{labels}"


def check_vocabulary(preprocessor: Any, teacher: CaldModel, model: str) -> None:
    """Every id the tokenizer can produce must have a row in the model's embeddings."""
    if not hasattr(preprocessor, "__len__"):  # a feature extractor: no token ids
        return
    try:
        embeddings = teacher.backbone.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # a backbone without token embeddings
        return
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None:
        return
    if len(preprocessor) > rows:
        raise CheckpointError(
            f"the tokenizer of teacher.model {model!r} has {len(preprocessor)} tokens, but the "
            f"model has embeddings for {rows}: use the tokenizer the model was trained with"
        )


def check_positions(teacher: CaldModel, max_length: int | None, model: str) -> None:
    """The longest sequence of the task must fit the model's position table, where it has one."""
    table = getattr(getattr(teacher.backbone, "config", None), "max_position_embeddings", None)
    if max_length is not None and isinstance(table, int) and max_length > table:
        raise CheckpointError(
            f"sequences of up to {max_length} positions (task.max_length or student.max_length) "
            f"are longer than teacher.model {model!r} takes (max_position_embeddings = {table})"
        )


def _shape_difference(target: CaldModel, source: CaldModel) -> str | None:
    """The first backbone tensor whose shape differs, described; ``None`` when all match."""
    theirs = {name: tuple(value.shape) for name, value in target.backbone.state_dict().items()}
    ours = {name: tuple(value.shape) for name, value in source.backbone.state_dict().items()}
    for name in sorted(theirs.keys() | ours.keys()):
        if theirs.get(name) != ours.get(name):
            there = list(theirs[name]) if name in theirs else "missing"
            here = list(ours[name]) if name in ours else "missing"
            return f"backbone tensor {name!r} is {there} there and {here} in teacher.model"
    return None


def check_target(target: CaldModel, where: str, source: CaldModel, head: HeadSpec) -> None:
    """The fine-tuned teacher at ``where`` must be ``source``'s family and shape, with ``head``."""
    if target.config.source != source.config.source:
        raise CheckpointError(
            f"teacher.target {where} is a {target.config.source!r} model, but teacher.source "
            f"is {source.config.source!r}"
        )
    if target.head_spec != head:
        raise CheckpointError(
            f"teacher.target {where} has {_describe(target.head_spec)}, but the task needs "
            f"{_describe(head)}"
        )
    difference = _shape_difference(target, source)
    if difference is not None:
        raise CheckpointError(
            f"teacher.target {where} was not fine-tuned from teacher.model "
            f"{source.config.source_model!r}: {difference}"
        )
