"""Shared by the families: the module that stands in for attention, and projection surgery."""

from __future__ import annotations

import torch
from torch import nn

from cald_framework.contracts import PaddingState, StateStore, advance

#: an attention implementation name that transformers' mask utilities do not know: with it set,
#: a converted backbone skips building the (quadratic) attention masks that no module reads
NO_ATTENTION = "cald_no_attention"


class MixerSlot(nn.Module):
    """Stands where an attention module stood.

    It calls the mixer with the padding mask of the current forward and mimics the replaced
    module's return tuple (the output first, then ``None`` for attention weights, caches or
    position biases), so the library's layer code runs unchanged around it.

    Attached to a :class:`~cald_framework.contracts.StateStore` (a
    :class:`~cald_framework.contracts.RecurrentSlot`, for generation) each call continues the
    sequences from the stored mixer state and stores the new one, without any change to the
    library's code.
    """

    def __init__(self, mixer: nn.Module, padding: PaddingState, outputs: int):
        super().__init__()
        self.mixer = mixer
        self.padding = padding
        self.outputs = outputs
        #: where the mixer's state lives while generating, else ``None``
        self.store: StateStore | None = None

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        mask = self.padding.for_states(hidden_states)
        if self.store is None:
            mixed = self.mixer(hidden_states, mask)
        else:
            mixed = advance(self.mixer, hidden_states, mask, self.store)
        return (mixed,) + (None,) * (self.outputs - 1)

    def attach(self, store: StateStore | None) -> None:
        """Run later calls against ``store`` (``None``: whole-sequence mode again)."""
        self.store = store


def linear_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` holding copies of ``weight`` ``[out, in]`` and ``bias``."""
    layer = nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def split_per_head(fused: nn.Linear, num_heads: int, parts: int) -> list[nn.Linear]:
    """Split a fused projection laid out per head as ``[head][part][head_dim]`` into ``parts``.

    GPT-NeoX's ``query_key_value`` is this layout with ``parts = 3`` (query, key, value).
    """
    width = fused.in_features
    head_dim = fused.out_features // (num_heads * parts)
    weight = fused.weight.detach().view(num_heads, parts, head_dim, width)
    bias = None if fused.bias is None else fused.bias.detach().view(num_heads, parts, head_dim)
    return [
        linear_from(
            weight[:, part].reshape(num_heads * head_dim, width),
            None if bias is None else bias[:, part].reshape(-1),
        )
        for part in range(parts)
    ]


def repeat_heads(projection: nn.Linear, kv_heads: int, groups: int) -> nn.Linear:
    """Expand a grouped-query key or value projection to one head per query head.

    Query head ``h`` reads key/value head ``h // groups``, as transformers' ``repeat_kv`` does.
    """
    if groups == 1:
        return projection
    width = projection.in_features
    head_dim = projection.out_features // kv_heads
    weight = projection.weight.detach().view(kv_heads, head_dim, width)
    bias = None if projection.bias is None else projection.bias.detach().view(kv_heads, head_dim)
    return linear_from(
        weight.repeat_interleave(groups, dim=0).reshape(-1, width),
        None if bias is None else bias.repeat_interleave(groups, dim=0).reshape(-1),
    )
