"""What the Mamba blocks share to prefill a generation state with their parallel scan."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PrefillingBlock(nn.Module):
    """A causal block whose ``_run`` gives its output and, on request, the state after it.

    ``forward`` is the whole-sequence mixer; ``prefill`` makes the block a
    :class:`~cald_framework.contracts.PrefillMixer` with the same computation.
    """

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._run(hidden_states, padding_mask, with_state=False)[0]

    def prefill(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any]:
        """The forward from an empty history, and the state ``step`` continues from."""
        return self._run(hidden_states, padding_mask, with_state=True)

    def _run(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None, with_state: bool
    ) -> tuple[torch.Tensor, Any]:
        """The output ``[B, T, D]`` and, when ``with_state``, the state after position ``T``."""
        raise NotImplementedError
