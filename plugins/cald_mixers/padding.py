"""Padding helpers shared by the mixers, vectorised over the batch (no per-sample loops)."""

from __future__ import annotations

import torch


def valid_lengths(padding_mask: torch.Tensor | None, hidden_states: torch.Tensor) -> torch.Tensor:
    """``[B]`` number of valid positions per sample (the full length when there is no mask)."""
    batch, time = hidden_states.shape[:2]
    if padding_mask is None:
        return torch.full((batch,), time, dtype=torch.long, device=hidden_states.device)
    return padding_mask.sum(dim=1)


def zero_padding(hidden_states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """``hidden_states`` with padded positions set to zero, so no state carries padding values."""
    if padding_mask is None:
        return hidden_states
    return hidden_states * padding_mask.unsqueeze(-1).to(hidden_states.dtype)


def skip_padding(time_step: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """``time_step [B, T, ...]`` (before its softplus) as ``-inf`` at padded positions.

    The softplus makes that a zero step: no decay and no input, so a padded position leaves an
    SSM state as it was and a left-padded sequence ends in the state of the unpadded one.
    """
    if padding_mask is None:
        return time_step
    padded = ~padding_mask.view(*padding_mask.shape, *(1,) * (time_step.dim() - 2))
    return time_step.masked_fill(padded, -torch.inf)


def reverse_valid_prefix(
    hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """Reverse the valid prefix of each sequence in time and leave the padding where it is.

    Position ``t < n`` takes position ``n - 1 - t``; padded positions keep their place. The map
    is its own inverse, so the same call undoes it.
    """
    if padding_mask is None:
        return hidden_states.flip(1)
    time = hidden_states.shape[1]
    positions = torch.arange(time, device=hidden_states.device)
    lengths = valid_lengths(padding_mask, hidden_states).unsqueeze(1)
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)
    index = source.unsqueeze(-1).expand_as(hidden_states)
    return hidden_states.gather(1, index)
