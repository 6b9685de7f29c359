"""The mixer contract: what a sequence mixer receives, what it must be, and how it registers.

A mixer plugin registers a :class:`MixerPlugin` whose ``build(options, context)`` returns a
module obeying :class:`SequenceMixer` (``[B, T, D]`` in and out, padding never leaking into
valid positions); causal mixers that can also run one position at a time obey
:class:`RecurrentMixer` as well, which makes students generate with a constant-size state,
and :class:`PrefillMixer` where they can also read a prompt in parallel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import CaldError
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
class PrefillMixer(Protocol):
    """A recurrent mixer that can also read a whole prompt in parallel and return its state.

    Generation prefills the prompt through it in one call (the chunked scan), then steps.
    ``padding_mask`` marks left padding: masked positions must leave the state unchanged, so
    a left-padded prompt ends in the state the unpadded one reaches. A recurrent mixer without
    ``prefill`` still generates: the prompt is stepped through one position at a time.
    """

    def prefill(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any]:
        """``[B, T, D]`` from an empty history: the forward's output and the state after ``T``."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Where one mixer layer keeps its recurrent state between forwards (a generation cache)."""

    #: the mixer's state, or ``None`` before the first position
    state: Any


@runtime_checkable
class RecurrentSlot(Protocol):
    """What a family wires into an attention slot, when it can also run against a state.

    Generation attaches each slot of a student to its layer's :class:`StateStore`: each call
    of the backbone then continues the sequences from the stored state (see :func:`advance`).
    """

    def attach(self, store: StateStore | None) -> None:
        """Run later calls against ``store``; ``None`` is back to whole-sequence mode."""
        ...


def map_state(function: Callable[..., torch.Tensor], *states: Any) -> Any:
    """Apply ``function`` leaf-wise to mixer states of the same structure (tensors inside
    dataclasses, tuples, lists and dicts), e.g. to select batch rows of any mixer's state."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return function(*states)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        fields = {
            field.name: map_state(function, *(getattr(state, field.name) for state in states))
            for field in dataclasses.fields(first)
        }
        return dataclasses.replace(first, **fields)
    if isinstance(first, (tuple, list)):
        return type(first)(map_state(function, *items) for items in zip(*states))
    if isinstance(first, dict):
        return {key: map_state(function, *(state[key] for state in states)) for key in first}
    return first


def advance(
    mixer: nn.Module,
    hidden_states: torch.Tensor,
    padding_mask: torch.Tensor | None,
    store: StateStore,
) -> torch.Tensor:
    """Run ``mixer`` on ``[B, T, D]`` continuing from ``store.state``, and store the new state.

    From an empty store a :class:`PrefillMixer` reads all ``T`` positions in parallel; else the
    mixer steps position by position, and a masked position keeps the state it found.
    """
    if store.state is None and isinstance(mixer, PrefillMixer):
        output, store.state = mixer.prefill(hidden_states, padding_mask)
        return output
    if not isinstance(mixer, RecurrentMixer):
        raise CaldError(
            f"mixer {type(mixer).__name__} has no recurrent step (init_state/step), "
            "so it cannot generate with a state"
        )
    batch, time = hidden_states.shape[:2]
    state = store.state
    if state is None:
        state = mixer.init_state(batch, hidden_states.device, hidden_states.dtype)
    outputs = []
    for position in range(time):
        output, stepped = mixer.step(hidden_states[:, position], state)
        if padding_mask is None:
            state = stepped
        else:
            valid = padding_mask[:, position]
            state = map_state(partial(_where_valid, valid), stepped, state)
        outputs.append(output)
    store.state = state
    return torch.stack(outputs, dim=1)


def _where_valid(valid: torch.Tensor, stepped: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``stepped`` for the batch rows where ``valid``, else ``kept``."""
    return torch.where(valid.view(-1, *(1,) * (stepped.dim() - 1)), stepped, kept)


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
