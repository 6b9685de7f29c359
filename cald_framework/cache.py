"""The generation cache of a causal CALD model: mixer states, and keys/values of kept attention.

A :class:`CaldCache` is a transformers :class:`~transformers.Cache` with one layer per backbone
layer. A layer whose attention a mixer replaced holds a :class:`MixerStateLayer`: the mixer's
recurrent state, whose size does not depend on the context. A layer that kept its attention
(a hybrid student, or a teacher) holds a :class:`~transformers.DynamicLayer` that the
library's attention fills with keys and values, as in any transformers model.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, DynamicLayer

from .contracts import RecurrentSlot, SourceFamily, map_state
from .errors import CaldError


class MixerStateLayer:
    """One mixer layer of a :class:`CaldCache` (a :class:`~cald_framework.contracts.StateStore`).

    It implements the layer methods transformers' :class:`~transformers.Cache` calls, so
    ``generate`` can select, repeat and reorder batch rows (beam search) in any mixer's state.
    """

    #: transformers' early (pre-forward) allocation does not apply: the mixer makes its state
    supports_early_init = False
    is_compileable = False
    #: a recurrent state cannot give back tokens it has read
    is_croppable = False

    def __init__(self) -> None:
        #: the mixer's state, or ``None`` before the prompt
        self.state: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.state).__name__})"

    def _rows(self, select: Any) -> None:
        if self.state is not None:
            self.state = map_state(select, self.state)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._rows(lambda tensor: tensor.index_select(0, beam_idx.to(tensor.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rows(lambda tensor: tensor.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rows(lambda tensor: tensor[indices])

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise CaldError(
                "a mixer's recurrent state cannot forget tokens (crop); assisted decoding and "
                "other rollbacks need a model whose every layer is attention"
            )

    def reset(self) -> None:
        self.state = None

    def offload(self) -> None:
        """Nothing to move: the state is small."""

    def prefetch(self) -> None:
        """Nothing to move: the state is small."""

    def get_max_length(self) -> int:
        return -1


class CaldCache(Cache):
    """Mixer states and kept-attention keys/values of one generation; made by ``generate``.

    ``family`` and ``backbone`` give the layout: a slot that a mixer fills (a
    :class:`~cald_framework.contracts.RecurrentSlot`) gets a :class:`MixerStateLayer`, any
    other slot a :class:`~transformers.DynamicLayer`. The cache counts the positions it has
    read, so positions and masks are right whichever kind of layer comes first.
    """

    def __init__(self, family: SourceFamily, backbone: torch.nn.Module):
        layers: list[Any] = [
            MixerStateLayer() if isinstance(slot.module, RecurrentSlot) else DynamicLayer()
            for slot in family.attention_slots(backbone)
        ]
        super().__init__(layers=layers)
        #: positions read so far (padding included)
        self.seen = 0

    @property
    def mixer_layers(self) -> dict[int, MixerStateLayer]:
        """The mixer layers by layer index."""
        return {
            index: layer
            for index, layer in enumerate(self.layers)
            if isinstance(layer, MixerStateLayer)
        }

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def reset(self) -> None:
        super().reset()
        self.seen = 0

    def nbytes(self) -> int:
        """Bytes held: the mixer states plus the kept layers' keys and values."""
        tensors: list[torch.Tensor] = []
        for layer in self.layers:
            if isinstance(layer, MixerStateLayer):
                map_state(lambda tensor: tensors.append(tensor) or tensor, layer.state)
            elif getattr(layer, "is_initialized", False):
                tensors += [layer.keys, layer.values]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
