"""Bidirectional Mamba2 for encoders: a forward and a backward Mamba2, outputs summed.

The backward direction reverses only the valid prefix of each sequence, so in a right-padded
batch every sequence is read from its own last token, exactly as if it were alone; padding
stays at the end, where a causal scan cannot carry it into valid positions. As in the CALD
paper's speech models there is no residual inside the mixer (the layer adds its own).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cald_framework.contracts import MixerContext

from .mamba2 import Mamba2Mixer, Mamba2Options
from .padding import reverse_valid_prefix


class BiMamba2Options(Mamba2Options):
    """Options of the ``bimamba2`` mixer; each direction is a Mamba2 with these options."""

    expand: int = Field(1, gt=0, description="inner width = expand * d_model, per direction")


class BiMamba2Mixer(nn.Module):
    """``forward_mamba(x) + reverse(backward_mamba(reverse(x)))`` over valid prefixes."""

    def __init__(self, options: BiMamba2Options, ctx: MixerContext):
        super().__init__()
        self.forward_mamba = Mamba2Mixer(options, ctx, name="bimamba2")
        self.backward_mamba = Mamba2Mixer(options, ctx, name="bimamba2")

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
