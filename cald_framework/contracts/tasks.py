"""The task contract: data, head, loss, distillation logits and metrics of one kind of task.

Also the records every model returns (:class:`CaldOutput`) and every task builds
(:class:`TaskData`), which the engine and the other plugins rely on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from .options import PluginOptions

#: what kind of input a source family takes and a task needs
Modality = Literal["text", "audio"]


@dataclass(frozen=True)
class HeadSpec:
    """What kind of output the task needs from the model.

    ``causal_lm`` asks the source for its language-model head (logits over the vocabulary);
    ``classification`` puts a linear layer after mean pooling over valid positions on the bare
    backbone; ``first_token_classification`` RoBERTa's head on the first position (dense, tanh,
    linear); ``token_classification`` a linear layer at every position (CTC). The host builds
    these heads from this record alone, so a saved model reloads without its task.
    """

    kind: Literal[
        "classification", "first_token_classification", "token_classification", "causal_lm"
    ]
    num_labels: int = 0


@dataclass
class CaldOutput:
    """What every model (teacher or student) returns."""

    #: ``[B, C]`` for sequence-level tasks, ``[B, T, C]`` for token/frame-level ones
    logits: torch.Tensor
    #: ``(embeddings, after layer 1, ..., after layer L)``, each ``[B, T, D]``
    hidden_states: tuple[torch.Tensor, ...]
    #: ``[B, T]`` valid positions of the hidden states (frames for audio)
    hidden_mask: torch.Tensor


@dataclass
class TaskData:
    """The datasets and batching that a task builds from the spec."""

    train: Any
    eval: Any
    #: turns a list of rows into a batch: ``{"inputs": {model kwargs}, "labels": ..., ...}``
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    head: HeadSpec
    #: per-row lengths of ``train`` for length-grouped batching, or ``None``
    train_lengths: list[int] | None = None
    #: anything the task wants to save with the model (label names, CTC vocabulary)
    metadata: dict[str, Any] = field(default_factory=dict)


class MetricAccumulator(ABC):
    """Collects predictions batch by batch during evaluation."""

    @abstractmethod
    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...


class Task(ABC):
    """A task: how it loads and encodes data, its model head, task loss and metrics."""

    #: the metric used for best-checkpoint selection unless the spec names another
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: what the source plugin must be able to handle
    modality: ClassVar[Modality]

    def __init__(self, options: PluginOptions):
        self.options = options

    @abstractmethod
    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        """Load and preprocess the data; ``preprocessor`` is the source's tokenizer/feature extractor."""

    @abstractmethod
    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor: ...

    @abstractmethod
    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for knowledge distillation and the ``[B, T]`` mask of positions that count."""

    @abstractmethod
    def metrics(self) -> MetricAccumulator: ...

    def inference_preprocessor(self, preprocessor: Any) -> Any:
        """What an exported model directory saves to turn raw inputs into model inputs and
        outputs back into text: ``preprocessor`` (the source's tokenizer or feature extractor)
        unless the task's outputs need one of their own (a CTC vocabulary). Called after
        :meth:`build_data`; the result must have ``save_pretrained``."""
        return preprocessor


@dataclass(frozen=True)
class TaskPlugin:
    """A registered task: ``build`` is the :class:`Task` class, called with validated options."""

    name: str
    options: type[PluginOptions]
    build: type[Task]
    description: str = ""

    @property
    def modality(self) -> Modality:
        """The task's own :attr:`Task.modality`, known before anything is built."""
        return self.build.modality
