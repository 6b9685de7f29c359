"""Bidirectional Mamba2 for encoders: a forward and a backward Mamba2, outputs summed.

The backward direction reverses only the valid prefix of each sequence, so in a right-padded
batch every sequence is read from its own last token, exactly as if it were alone; padding
stays at the end, where a causal scan cannot carry it into valid positions. As in the CALD
paper's speech models there is no residual inside the mixer (the layer adds its own).

Under ``init = "attention"`` both directions start from the same teacher projections (see
:mod:`.mamba2`), each with its norm scale halved: each direction's output is a normalised
average over its half of the sequence, so the mean of the two, not their sum, approximates the
bidirectional attention's average over the whole sequence (the current token, in both halves,
counts twice).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from cald_framework.contracts import MixerContext

from .mamba2 import Mamba2Mixer, Mamba2Options
from .padding import reverse_valid_prefix
from .ssm_options import DERIVED

#: each direction's share of the attention-derived output (the two are averaged)
DIRECTION_SCALE = 0.5


class BiMamba2Options(Mamba2Options):
    """Options of the ``bimamba2`` mixer; each direction is a Mamba2 with these options."""

    RANDOM_GEOMETRY: ClassVar[dict[str, int]] = {**Mamba2Options.RANDOM_GEOMETRY, "expand": 1}

    expand: int | None = Field(
        None,
        gt=0,
        description="inner width = expand * d_model, per direction; " + DERIVED.format(random=1),
    )


class BiMamba2Mixer(nn.Module):
    """``forward_mamba(x) + reverse(backward_mamba(reverse(x)))`` over valid prefixes."""

    def __init__(self, options: BiMamba2Options, ctx: MixerContext):
        super().__init__()
        self.forward_mamba = Mamba2Mixer(options, ctx, "bimamba2", DIRECTION_SCALE)
        self.backward_mamba = Mamba2Mixer(options, ctx, "bimamba2", DIRECTION_SCALE)

    def backward_output(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The backward direction's contribution, in the original time order."""
        reversed_states = reverse_valid_prefix(hidden_states, padding_mask)
        return reverse_valid_prefix(
            self.backward_mamba(reversed_states, padding_mask), padding_mask
        )

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        forward_output = self.forward_mamba(hidden_states, padding_mask)
        return forward_output + self.backward_output(hidden_states, padding_mask)
