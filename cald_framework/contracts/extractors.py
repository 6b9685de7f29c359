"""The extractor contract: which hidden states layerwise distillation compares, normalised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .options import PluginOptions
from .tasks import CaldOutput


@dataclass
class ExtractedStates:
    """The hidden states that layerwise distillation compares, already normalised."""

    layers: list[torch.Tensor]
    mask: torch.Tensor


#: what an extractor plugin builds: a model's output in, the states to distil out
Extractor = Callable[[CaldOutput], ExtractedStates]


@dataclass(frozen=True)
class ExtractorPlugin:
    """A registered hidden-state extractor: picks and normalises the distilled layers."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions], Extractor]
    description: str = ""
