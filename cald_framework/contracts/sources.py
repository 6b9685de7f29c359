"""The source contract: a model family that loads a pretrained backbone and lets mixers in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from .mixers import AttentionProjections
from .tasks import HeadSpec, Modality


@dataclass(frozen=True)
class AttentionSlot:
    """Where one attention module lives: ``getattr(parent, attribute)`` is the module."""

    layer_index: int
    parent: nn.Module
    attribute: str

    @property
    def module(self) -> nn.Module:
        """The module now in the slot (the attention, or what replaced it)."""
        return getattr(self.parent, self.attribute)


class PaddingState:
    """The padding mask of the forward pass in progress, shared by a model and its mixer wrappers.

    The host sets it before each forward and the wrappers that a source family installs read it,
    so mixers receive a plain ``[B, T]`` mask instead of decoding each library's attention-mask
    format. The mask stays set after the forward, so activation checkpointing can recompute.
    """

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def set(self, mask: torch.Tensor) -> None:
        """Record ``mask`` (``[B, T]`` bool); an all-valid mask is stored as ``None``."""
        self.mask = None if bool(mask.all()) else mask

    def for_states(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """The mask for ``hidden_states`` ``[B, T, D]``; refuses a mask left from another batch."""
        if self.mask is not None and self.mask.shape != hidden_states.shape[:2]:
            raise RuntimeError(
                f"padding mask {tuple(self.mask.shape)} does not match hidden states "
                f"{tuple(hidden_states.shape)}: the model was called without setting its mask"
            )
        return self.mask


#: no config overrides: the family's own settings
NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})


class SourceFamily(ABC):
    """Knows one model family: loading, where attention lives and how to swap it for a mixer.

    The host never looks inside a backbone: it asks the family for the layers (whose outputs
    are the residual stream it distils), the attention slots and their projections, and lets
    the family run the backbone and wire mixers in, so library-specific call signatures, masks
    and return tuples stay inside the plugin.
    """

    #: ``True`` for autoregressive families (only causal mixers fit)
    causal: ClassVar[bool]
    modality: ClassVar[Modality]
    #: ``False`` where the attention slot leaves the output projection outside (see
    #: :attr:`MixerContext.output_projection`)
    slot_has_output: ClassVar[bool] = True

    @abstractmethod
    def load_backbone(
        self, model: str, head: HeadSpec, config_overrides: Mapping[str, Any] = NO_OVERRIDES
    ) -> nn.Module:
        """Load pretrained weights from a hub id or a local directory.

        ``config_overrides`` (the spec's ``[teacher.config]`` or ``[student.config]``) are
        settings of the library's model config, applied over the family's own adjustments; a
        family raises :class:`~cald_framework.errors.CaldError` for a key its config lacks.
        """

    @abstractmethod
    def backbone_from_config(
        self,
        config: Mapping[str, Any],
        head: HeadSpec,
        config_overrides: Mapping[str, Any] = NO_OVERRIDES,
    ) -> nn.Module:
        """Build a randomly initialised backbone from a config dict (for tests and reloading),
        with ``config_overrides`` as in :meth:`load_backbone`."""

    @abstractmethod
    def backbone_config(self, backbone: nn.Module) -> dict[str, Any]:
        """A JSON-ready config from which :meth:`backbone_from_config` rebuilds ``backbone``."""

    @abstractmethod
    def load_preprocessor(self, model: str) -> Any:
        """The tokenizer or feature extractor that goes with ``model``."""

    @abstractmethod
    def layers(self, backbone: nn.Module) -> Sequence[nn.Module]:
        """The ``L`` blocks in order; each one's output is the residual stream after its FFN.

        The input of the first block is the embedding output. Outputs are tensors or tuples
        whose first item is the hidden state.
        """

    @abstractmethod
    def dimensions(self, backbone: nn.Module) -> tuple[int, int]:
        """``(d_model, num_heads)`` of the attention that mixers replace."""

    @abstractmethod
    def attention_slots(self, backbone: nn.Module) -> list[AttentionSlot]:
        """The attention modules that mixers replace, one per layer, in layer order."""

    @abstractmethod
    def projections(self, slot: AttentionSlot) -> AttentionProjections:
        """The attention's query/key/value (and output) projections, split to the hidden width."""

    @abstractmethod
    def wire_mixer(
        self, backbone: nn.Module, slot: AttentionSlot, mixer: nn.Module, padding: PaddingState
    ) -> None:
        """Put ``mixer`` in ``slot``: it gets ``(hidden_states, padding.for_states(...))``.

        The family adapts the library's call signature and return tuple, and may switch off
        attention-mask construction that no remaining module uses.
        """

    @abstractmethod
    def hidden_mask(
        self, backbone: nn.Module, inputs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B, T]`` bool: the valid positions of the hidden states (frames for audio)."""

    @abstractmethod
    def run(
        self, backbone: nn.Module, inputs: Mapping[str, torch.Tensor], head: HeadSpec
    ) -> torch.Tensor:
        """Run the backbone on the model inputs.

        Returns the LM logits ``[B, T, V]`` for a ``causal_lm`` head, else the final features
        ``[B, T, D]`` (after any final norm) that the host's head reads.
        """

    def extend_positions(self, backbone: nn.Module, length: int) -> bool:
        """Make ``backbone`` accept inputs of ``length`` positions; ``True`` if it had to change.

        Only for speed measurements beyond the teacher's trained length: a family with a fixed
        position table grows it with new random rows (so outputs there mean nothing). The
        default does nothing and returns ``False``, right for families without such a limit.
        """
        return False


@dataclass(frozen=True)
class SourcePlugin:
    """A registered source model family: ``family`` is the :class:`SourceFamily` class."""

    name: str
    family: type[SourceFamily]
    description: str = ""

    @property
    def causal(self) -> bool:
        """The family's own :attr:`SourceFamily.causal`, known before anything is built."""
        return self.family.causal

    @property
    def modality(self) -> Modality:
        """The family's own :attr:`SourceFamily.modality`."""
        return self.family.modality
