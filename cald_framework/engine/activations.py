"""Gradient (activation) checkpointing: keep each layer's input, recompute the rest in backward.

A layer's activations are the bulk of training memory at long sequences; checkpointing trades
them for a second forward of each layer during the backward. Models built on Hugging Face
backbones use the library's own switch (its layers know their arguments and caches); layers of
other backbones are wrapped in :func:`torch.utils.checkpoint.checkpoint`. Both use the
non-reentrant variant, under which the forward hooks that record hidden states and the
gradients of every parameter stay exactly as without checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from ..errors import CaldError
from ..modeling import CaldModel


def _recomputed(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def checkpoint_layers(layers: Sequence[nn.Module]) -> None:
    """Make each of ``layers`` recompute its activations in the backward (when grads are on)."""
    for layer in layers:
        layer.forward = partial(_recomputed, layer.forward)  # type: ignore[method-assign]


def _library_switch(model: nn.Module) -> bool:
    """Turn on the Hugging Face switch where the model has one; ``False`` where it has not."""
    if not (isinstance(model, PreTrainedModel) and model.supports_gradient_checkpointing):
        return False
    try:
        model.activation_checkpointing_enable({"use_reentrant": False})
    except ValueError:  # no module of the model honours the switch
        return False
    return True


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """``training.gradient_checkpointing``: the library's switch, else the model's layers wrapped."""
    if _library_switch(model):
        return
    if not isinstance(model, CaldModel):
        raise CaldError(
            f"training.gradient_checkpointing: {type(model).__name__} has no layers to checkpoint"
        )
    checkpoint_layers(model.family.layers(model.backbone))
