"""Pick the hidden states that layerwise distillation compares, and normalise them.

Index ``0`` of ``CaldOutput.hidden_states`` is the embedding output and index ``i`` the
residual stream after layer ``i``. The paper's reductions map to: NLP, all ``L + 1`` states
(``skip_embeddings=False``); language modelling, layers ``1..L-1`` (``skip_last=True``);
speech, layers ``1..L`` (the defaults).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from cald_framework.contracts import CaldOutput, ExtractedStates, PluginOptions
from cald_framework.errors import CaldError


class HiddenStateOptions(PluginOptions):
    """Which hidden states to distil: a contiguous range, or an explicit list of indices."""

    skip_embeddings: bool = True
    skip_last: bool = False
    #: explicit indices into ``(embeddings, layer 1, ..., layer L)``; replaces the two flags
    layers: list[int] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way_to_select(self) -> HiddenStateOptions:
        if self.layers is not None and (not self.skip_embeddings or self.skip_last):
            raise ValueError("give either 'layers' or skip_embeddings/skip_last, not both")
        if self.layers is not None and min(self.layers) < 0:
            raise ValueError(f"layer indices must be >= 0, got {self.layers}")
        return self


class LayerNormOptions(HiddenStateOptions):
    eps: float = Field(default=1e-5, gt=0)


def select(options: HiddenStateOptions, output: CaldOutput) -> list[torch.Tensor]:
    """The hidden states that ``options`` selects from ``output``, in order."""
    states = output.hidden_states
    if options.layers is not None:
        too_large = [index for index in options.layers if index >= len(states)]
        if too_large:
            raise CaldError(
                f"extractor layers {too_large} out of range: the model has "
                f"{len(states)} hidden states (embeddings + {len(states) - 1} layers)"
            )
        return [states[index] for index in options.layers]
    start = 1 if options.skip_embeddings else 0
    stop = len(states) - 1 if options.skip_last else len(states)
    if start >= stop:
        raise CaldError(f"extractor options select no hidden state of {len(states)}")
    return list(states[start:stop])


def hidden_states(options: HiddenStateOptions) -> Callable[[CaldOutput], ExtractedStates]:
    """The residual stream as it is."""

    def extract(output: CaldOutput) -> ExtractedStates:
        return ExtractedStates(select(options, output), output.hidden_mask)

    return extract


def layer_normed(options: LayerNormOptions) -> Callable[[CaldOutput], ExtractedStates]:
    """The residual stream under a parameter-free LayerNorm (the paper's choice for Mamba)."""

    def extract(output: CaldOutput) -> ExtractedStates:
        layers = [
            F.layer_norm(state, state.shape[-1:], eps=options.eps)
            for state in select(options, output)
        ]
        return ExtractedStates(layers, output.hidden_mask)

    return extract
