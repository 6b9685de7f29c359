"""The state of an FSDP2-sharded student: each process's pieces, and the whole for the main one.

Checkpoints store what each process holds (the local tensor of every sharded parameter and of
its optimizer moments), so no process ever gathers the whole model to save it. Loading puts
the pieces back into the layout of the current model, which must be sharded the same way
(same number of processes); :func:`full_weights` gathers the whole student for evaluation and
export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer


def _local(tree: Any) -> Any:
    """``tree`` with every distributed tensor replaced by this process's piece of it."""
    if isinstance(tree, DTensor):
        return tree.to_local().detach()
    if isinstance(tree, Mapping):
        return {key: _local(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_local(value) for value in tree)
    return tree


def _placed(piece: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``piece`` laid out as ``like``: a distributed tensor when ``like`` is one (same shape)."""
    if isinstance(like, DTensor) and piece.dim() == like.dim():
        return DTensor.from_local(
            piece.to(like.device), like.device_mesh, like.placements, shape=like.shape, stride=like.stride()
        )
    return piece


def local_state(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """This process's pieces of the student's weights and of its optimizer state."""
    return {
        "model": _local(get_model_state_dict(model)),
        "optimizer": _local(get_optimizer_state_dict(model, optimizer)),
    }


def load_local_state(model: nn.Module, optimizer: Optimizer, state: Mapping[str, Any]) -> None:
    """Put pieces saved by :func:`local_state` back, into a model sharded the same way."""
    params = get_model_state_dict(model)
    weights = {name: _placed(piece, params[name]) for name, piece in state["model"].items()}
    set_model_state_dict(model, weights)
    if "optimizer" in state:
        saved = state["optimizer"]
        moments = {
            name: {key: _placed(value, params[name]) for key, value in entries.items()}
            for name, entries in saved["state"].items()
        }
        set_optimizer_state_dict(model, optimizer, {"state": moments, "param_groups": saved["param_groups"]})


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole student's weights on the main process, in host memory (collective: every
    process calls it; the others get an empty mapping)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
