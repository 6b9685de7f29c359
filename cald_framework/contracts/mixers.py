"""The mixer contract: what a sequence mixer receives, what it must be, and how it registers.

A mixer plugin registers a :class:`MixerPlugin` whose ``build(options, context)`` returns a
module obeying :class:`SequenceMixer` (``[B, T, D]`` in and out, padding never leaking into
valid positions); causal mixers that can also run one position at a time obey
:class:`RecurrentMixer` as well, which makes students generate with a constant-size state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from .options import PluginOptions


@dataclass(frozen=True)
class AttentionProjections:
    """The teacher attention's projections in a family-neutral layout, for mixers that reuse them.

    Each entry is an ``nn.Linear`` of the hidden width (query/key/value split out of fused
    layouts by the source plugin). ``output`` is ``None`` where the source keeps the output
    projection outside the replaced module (as BERT does).
    """

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear | None = None


@dataclass
class MixerContext:
    """What a mixer needs to know about the attention slot it fills."""

    d_model: int
    num_heads: int
    layer_index: int
    num_layers: int
    #: longest sequence the student must handle (Linformer sizes its projections with it)
    max_length: int
    #: ``True`` when the source model is autoregressive
    causal: bool
    #: a module owned by the student model where mixers keep parameters shared across layers
    #: (e.g. Linformer's ``share = "layer"``): the first layer creates them, later layers reuse them
    shared: nn.ModuleDict
    #: the replaced attention's projections, or ``None`` when building from a saved config
    projections: AttentionProjections | None = None
    #: whether the replaced module applies the output projection itself (``False`` for BERT,
    #: whose output dense stays in the layer); known even when ``projections`` is ``None``, so
    #: a mixer ending in an output projection adds one exactly when the attention had it
    output_projection: bool = True
    #: whether the replaced attention's projections have biases (Llama's have none); known even
    #: when ``projections`` is ``None``, so a mixer rebuilt from a config has the saved layout
    projection_bias: bool = True


@runtime_checkable
class SequenceMixer(Protocol):
    """A module that replaces attention: ``[B, T, D]`` in, ``[B, T, D]`` out.

    ``padding_mask`` may be ``None`` (no padding). Padded positions may hold anything in the
    output but must never influence valid positions.
    """

    def __call__(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor: ...


@runtime_checkable
class RecurrentMixer(Protocol):
    """A causal mixer that can also run one step at a time with a constant-size state."""

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Any: ...

    def step(self, hidden_state: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """``hidden_state`` is ``[B, D]``; returns the output ``[B, D]`` and the new state."""
        ...


@runtime_checkable
class RecurrentSlot(Protocol):
    """What a family wires into an attention slot, when it can also run one position at a time.

    Generation puts every slot of a student in step mode: each call of the backbone then takes
    one position and the slot advances its mixer's :class:`RecurrentMixer` state.
    """

    def start_recurrence(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        """Enter step mode from an empty history; an error if the mixer cannot step."""
        ...

    def stop_recurrence(self) -> None:
        """Leave step mode and drop the state."""
        ...


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Parameter names (relative to ``module``) that a mixer tagged ``_no_weight_decay = True``."""
    return {
        name
        for name, param in module.named_parameters()
        if getattr(param, "_no_weight_decay", False)
    }


#: ``limits(options, max_length)``: the options whose sizes are absurd at the run's
#: ``max_length`` (``None`` when the spec sets none), as ``{option key: one-line reason}``;
#: empty when they are fine. Validation calls it, so a size that would allocate tens of GB fails
#: there with one line instead of running out of memory when the student is built.
SizeLimits = Callable[[PluginOptions, "int | None"], dict[str, str]]


@dataclass(frozen=True)
class MixerPlugin:
    """A registered sequence mixer."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions, MixerContext], nn.Module]
    #: ``"causal"`` mixers fit any source; ``"bidirectional"`` ones only non-causal sources
    direction: Literal["causal", "bidirectional"]
    description: str = ""
    #: checks of the sizes the options allocate against the run's ``max_length`` (optional)
    limits: SizeLimits | None = None
