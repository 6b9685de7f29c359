"""The contracts between the host and its plugins.

Every plugin kind registers one of the ``*Plugin`` records below through its registration hook
(see :mod:`cald_framework.hookspecs`). The host only ever talks to plugins through these records,
which is what keeps ``cald_framework/`` free of any concrete model family or mixer.

Conventions shared by every contract:

* ``padding_mask`` / ``hidden_mask`` are ``bool`` tensors of shape ``[batch, time]``, ``True`` at
  valid positions. Valid positions always form a prefix (right padding).
* Hidden states are ``[batch, time, width]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict
from torch import nn


#: prefix of a value that names an entry of the spec's ``[assets]`` table (resolved at run time)
ASSET_PREFIX = "asset:"


_FILE_SUFFIXES = {
    ".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".bz2", ".gz", ".xz", ".zip",
    ".gguf", ".safetensors", ".wav", ".flac", ".toml",
}


def _is_local_reference(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in _FILE_SUFFIXES


def _check_location(value: str) -> str:
    """Local paths must exist; hub ids and asset references are checked when they are used."""
    if value.startswith(ASSET_PREFIX) or not _is_local_reference(value):
        return value
    if not Path(value).expanduser().exists():
        raise ValueError(f"no such file or directory: {value}")
    return value


#: A local file or directory (must exist), an ``asset:NAME[/sub/path]`` reference, or a hub id.
#: Relative paths are relative to the working directory.
Location = Annotated[str, AfterValidator(_check_location)]


class PluginOptions(BaseModel):
    """Base class for every plugin's option model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(PluginOptions):
    """Option model for plugins that take no options."""


# --------------------------------------------------------------------------------------------
# Sequence mixers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionProjections:
    """The teacher attention's projections in a family-neutral layout, for mixers that reuse them.

    Each entry is an ``nn.Linear`` of the hidden width (query/key/value split out of fused
    layouts by the source plugin). ``output`` is ``None`` where the source keeps the output
    projection outside the replaced module (as BERT does).
    """

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear | None = None


@dataclass
class MixerContext:
    """What a mixer needs to know about the attention slot it fills."""

    d_model: int
    num_heads: int
    layer_index: int
    num_layers: int
    #: longest sequence the student must handle (Linformer sizes its projections with it)
    max_length: int
    #: ``True`` when the source model is autoregressive
    causal: bool
    #: a module owned by the student model where mixers keep parameters shared across layers
    #: (e.g. Linformer's ``share = "layer"``): the first layer creates them, later layers reuse them
    shared: nn.ModuleDict
    #: the replaced attention's projections, or ``None`` when building from a saved config
    projections: AttentionProjections | None = None
    #: whether the replaced module applies the output projection itself (``False`` for BERT,
    #: whose output dense stays in the layer); known even when ``projections`` is ``None``, so
    #: a mixer ending in an output projection adds one exactly when the attention had it
    output_projection: bool = True
    #: whether the replaced attention's projections have biases (Llama's have none); known even
    #: when ``projections`` is ``None``, so a mixer rebuilt from a config has the saved layout
    projection_bias: bool = True


@runtime_checkable
class SequenceMixer(Protocol):
    """A module that replaces attention: ``[B, T, D]`` in, ``[B, T, D]`` out.

    ``padding_mask`` may be ``None`` (no padding). Padded positions may hold anything in the
    output but must never influence valid positions.
    """

    def __call__(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor: ...


@runtime_checkable
class RecurrentMixer(Protocol):
    """A causal mixer that can also run one step at a time with a constant-size state."""

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Any: ...

    def step(self, hidden_state: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """``hidden_state`` is ``[B, D]``; returns the output ``[B, D]`` and the new state."""
        ...


@runtime_checkable
class RecurrentSlot(Protocol):
    """What a family wires into an attention slot, when it can also run one position at a time.

    Generation puts every slot of a student in step mode: each call of the backbone then takes
    one position and the slot advances its mixer's :class:`RecurrentMixer` state.
    """

    def start_recurrence(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        """Enter step mode from an empty history; an error if the mixer cannot step."""
        ...

    def stop_recurrence(self) -> None:
        """Leave step mode and drop the state."""
        ...


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Parameter names (relative to ``module``) that a mixer tagged ``_no_weight_decay = True``."""
    return {
        name
        for name, param in module.named_parameters()
        if getattr(param, "_no_weight_decay", False)
    }


@dataclass(frozen=True)
class MixerPlugin:
    """A registered sequence mixer."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions, MixerContext], nn.Module]
    #: ``"causal"`` mixers fit any source; ``"bidirectional"`` ones only non-causal sources
    direction: Literal["causal", "bidirectional"]
    description: str = ""


# --------------------------------------------------------------------------------------------
# Tasks and model heads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """What kind of output the task needs from the model.

    ``causal_lm`` asks the source for its language-model head (logits over the vocabulary);
    ``classification`` puts a linear layer after mean pooling over valid positions on the bare
    backbone; ``token_classification`` a linear layer at every position (CTC). The host builds
    these heads from this record alone, so a saved model reloads without its task.
    """

    kind: Literal["classification", "token_classification", "causal_lm"]
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
    """A task: data pipeline, head, loss and metrics."""

    #: the metric used for best-checkpoint selection unless the spec names another
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: what the source plugin must be able to handle
    modality: ClassVar[Literal["text", "audio"]]

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


@dataclass(frozen=True)
class TaskPlugin:
    """A registered task."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions], Task]
    modality: Literal["text", "audio"]
    description: str = ""


# --------------------------------------------------------------------------------------------
# Source model families
# --------------------------------------------------------------------------------------------


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


class SourceFamily(ABC):
    """Knows one model family: loading, where attention lives and how to swap it for a mixer.

    The host never looks inside a backbone: it asks the family for the layers (whose outputs
    are the residual stream it distils), the attention slots and their projections, and lets
    the family run the backbone and wire mixers in, so library-specific call signatures, masks
    and return tuples stay inside the plugin.
    """

    #: ``True`` for autoregressive families (only causal mixers fit)
    causal: ClassVar[bool]
    modality: ClassVar[Literal["text", "audio"]]
    #: ``False`` where the attention slot leaves the output projection outside (see
    #: :attr:`MixerContext.output_projection`)
    slot_has_output: ClassVar[bool] = True

    @abstractmethod
    def load_backbone(self, model: str, head: HeadSpec) -> nn.Module:
        """Load pretrained weights from a hub id or a local directory."""

    @abstractmethod
    def backbone_from_config(self, config: Mapping[str, Any], head: HeadSpec) -> nn.Module:
        """Build a randomly initialised backbone from a config dict (for tests and reloading)."""

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
    """A registered source model family."""

    name: str
    family: Callable[[], SourceFamily]
    causal: bool
    modality: Literal["text", "audio"]
    description: str = ""


# --------------------------------------------------------------------------------------------
# Hidden-state extractors
# --------------------------------------------------------------------------------------------


@dataclass
class ExtractedStates:
    """The hidden states that layerwise distillation compares, already normalised."""

    layers: list[torch.Tensor]
    mask: torch.Tensor


@dataclass(frozen=True)
class ExtractorPlugin:
    """A registered hidden-state extractor: picks and normalises the distilled layers."""

    name: str
    options: type[PluginOptions]
    build: Callable[[PluginOptions], Callable[[CaldOutput], ExtractedStates]]
    description: str = ""


# --------------------------------------------------------------------------------------------
# Guidance schedules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidancePlugin:
    """A registered guidance schedule (see :mod:`cald_framework.engine.guidance`)."""

    name: str
    options: type[PluginOptions]
    build: Callable[..., Any]
    #: the schedule needs the fine-tuned target teacher
    needs_target_teacher: bool = False
    #: the schedule needs the waypoints of the teacher's fine-tuning run
    needs_waypoints: bool = False
    #: whose weights the student starts from unless the spec says otherwise
    default_init: Literal["source", "target"] = "target"
    description: str = ""
