"""What every transformers-based family shares: loading, layout lookup, inputs, running, wiring.

A family subclass names where its layers and attention live (``layers_path`` under the base
model, ``attention_path`` under each layer) and how to read its projections; the lookups check
the layout, so a checkpoint that only looks like the family fails with the missing path named.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
)

from cald_framework.contracts import (
    NO_OVERRIDES,
    AttentionSlot,
    HeadSpec,
    PaddingState,
    SourceFamily,
)
from cald_framework.errors import CaldError, CheckpointError

from .wiring import NO_ATTENTION, MixerSlot


def locate(model: str) -> tuple[str, dict[str, str]]:
    """Split a model reference into a ``from_pretrained`` location and extra arguments.

    A GGUF checkpoint is named ``dir::file.gguf`` (``dir`` a local directory or hub id) or by
    the path of the ``.gguf`` file itself.
    """
    if "::" in model:
        location, gguf_file = model.split("::", 1)
        return location, {"gguf_file": gguf_file}
    if model.lower().endswith(".gguf"):
        path = Path(model)
        return str(path.parent), {"gguf_file": path.name}
    return model, {}


def check_override(config: PretrainedConfig, key: str, value: Any) -> None:
    """Refuse a key ``config`` does not have, a value of another kind than its current one,
    and a dropout or probability outside [0, 1]."""
    where = f"config override {key} = {value!r}"
    if key not in config.to_dict():
        raise CaldError(f"{where}: {type(config).__name__} has no setting {key!r}")
    current = getattr(config, key)
    if current is not None and _kind(value) != _kind(current):
        raise CaldError(
            f"{where}: {type(config).__name__}.{key} is a {_kind(current)}, not a {_kind(value)}"
        )
    if _is_probability(key) and not 0 <= value <= 1:
        raise CaldError(f"{where}: a dropout or probability must lie in [0, 1]")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _is_probability(key: str) -> bool:
    return key.endswith(("dropout", "_prob", "layerdrop"))


#: never run code shipped with a checkpoint (unset, transformers would ask on a terminal)
NO_REMOTE_CODE = MappingProxyType({"trust_remote_code": False})


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class TransformersFamily(SourceFamily):
    """A source family whose backbones are transformers ``PreTrainedModel`` instances."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: model keyword arguments; the first one is required
    input_names: ClassVar[tuple[str, ...]]
    #: under ``backbone.base_model``: the list of layers
    layers_path: ClassVar[str]
    #: under each layer: the attention module that a mixer replaces
    attention_path: ClassVar[str]
    preprocessor_class: ClassVar[Any] = AutoTokenizer
    has_lm_head: ClassVar[bool] = False
    #: inputs that only generation passes (beyond :attr:`input_names`), handed to the backbone
    generation_inputs: ClassVar[tuple[str, ...]] = ()
    #: extra keyword arguments for every backbone call
    forward_kwargs: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    # ----------------------------------------------------------------- loading and rebuilding

    def _check_local(self, model: str, location: str, extra: Mapping[str, str], *, config: bool) -> None:
        """A local directory must not be empty, and hold a ``config.json`` when ``config``.

        GGUF files carry their own config; a preprocessor may be saved without the model's.
        """
        path = Path(location).expanduser()
        if not path.is_dir() or "gguf_file" in extra:
            return
        problem = "is empty" if not any(path.iterdir()) else None
        if problem is None and config and not (path / "config.json").is_file():
            problem = "has no config.json, so it holds no saved model"
        if problem:
            raise CheckpointError(f"cannot load {self.name} model {model!r}: {location} {problem}")

    def load_backbone(
        self, model: str, head: HeadSpec, config_overrides: Mapping[str, Any] = NO_OVERRIDES
    ) -> nn.Module:
        location, extra = locate(model)
        self._check_local(model, location, extra, config=True)
        model_class = self._model_class(head)
        try:
            settings = AutoConfig.from_pretrained(location, **extra, **NO_REMOTE_CODE)
            backbone = model_class.from_pretrained(
                location,
                config=self.configure(settings, config_overrides),
                dtype=torch.float32,
                **extra,
                **NO_REMOTE_CODE,
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot load {self.name} model {model!r}: {_first_line(error)}"
            ) from error
        except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refused it
            raise CheckpointError(
                f"cannot load {self.name} model {model!r}: its pickled weights hold more than "
                "tensors, and unpickling them could run code; convert them to safetensors"
            ) from error
        return self.adopt(backbone)

    def backbone_from_config(
        self,
        config: Mapping[str, Any],
        head: HeadSpec,
        config_overrides: Mapping[str, Any] = NO_OVERRIDES,
    ) -> nn.Module:
        settings = dict(config)
        model_type = settings.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise CaldError(
                f"{self.name} backbone config has model_type {model_type!r}, "
                "which transformers does not know"
            )
        hf_config = self.configure(CONFIG_MAPPING[model_type].from_dict(settings), config_overrides)
        backbone = self._model_class(head).from_config(hf_config, dtype=torch.float32)
        return self.adopt(backbone)

    def backbone_config(self, backbone: nn.Module) -> dict[str, Any]:
        return backbone.config.to_dict()

    def load_preprocessor(self, model: str) -> Any:
        location, extra = locate(model)
        self._check_local(model, location, extra, config=False)
        try:
            return self.preprocessor_class.from_pretrained(location, **extra, **NO_REMOTE_CODE)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot load the preprocessor of {self.name} model {model!r}: {_first_line(error)}"
            ) from error

    def prepare_config(self, config: PretrainedConfig) -> PretrainedConfig:
        """Adjust a config before the backbone is built (e.g. switch off stochastic layers)."""
        return config

    def implied_settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Settings that ``overrides`` need to take effect (e.g. a switch they sit behind)."""
        return {}

    def configure(
        self, config: PretrainedConfig, overrides: Mapping[str, Any]
    ) -> PretrainedConfig:
        """The family's adjustments (:meth:`prepare_config`), then the spec's overrides."""
        config = self.prepare_config(config)
        for key, value in overrides.items():
            check_override(config, key, value)
        for key, value in {**self.implied_settings(overrides), **overrides}.items():
            setattr(config, key, value)
        return config

    def adopt(self, backbone: nn.Module) -> nn.Module:
        """Check the layout of a freshly built backbone; families may also trim it."""
        self.attention_slots(backbone)
        return backbone

    def _model_class(self, head: HeadSpec) -> Any:
        if head.kind != "causal_lm":
            return AutoModel
        if not self.has_lm_head:
            raise CaldError(
                f"source {self.name!r} has no causal language-model head; "
                "use a classification or token_classification head"
            )
        return AutoModelForCausalLM

    # ----------------------------------------------------------------- layout

    def layers(self, backbone: nn.Module) -> Sequence[nn.Module]:
        return self._find(backbone.base_model, self.layers_path, backbone)

    def dimensions(self, backbone: nn.Module) -> tuple[int, int]:
        return backbone.config.hidden_size, backbone.config.num_attention_heads

    def attention_slots(self, backbone: nn.Module) -> list[AttentionSlot]:
        parent_path, _, attribute = self.attention_path.rpartition(".")
        slots = []
        for index, layer in enumerate(self.layers(backbone)):
            parent = self._find(layer, parent_path, backbone) if parent_path else layer
            self._find(parent, attribute, backbone)
            slots.append(AttentionSlot(index, parent, attribute))
        return slots

    def _find(self, root: nn.Module, path: str, backbone: nn.Module) -> Any:
        found: Any = root
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise CaldError(
                    f"{type(backbone).__name__} does not have the {self.name} layout: "
                    f"no '{path}' under {type(root).__name__}"
                )
        return found

    # ----------------------------------------------------------------- running

    def model_inputs(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inputs checked against :attr:`input_names`, as keyword arguments."""
        unknown = sorted(set(inputs) - set(self.input_names) - set(self.generation_inputs))
        if unknown:
            raise CaldError(
                f"{self.name} model got unknown inputs {unknown}; it takes {list(self.input_names)}"
            )
        if self.input_names[0] not in inputs:
            raise CaldError(f"{self.name} model needs the input {self.input_names[0]!r}")
        return dict(inputs)

    def hidden_mask(self, backbone: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.model_inputs(inputs)[self.input_names[0]]
        mask = inputs.get("attention_mask")
        if mask is None:
            return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if mask.shape != tokens.shape[:2]:
            raise CaldError(
                f"{self.name} model: attention_mask {tuple(mask.shape)} does not match "
                f"{self.input_names[0]} {tuple(tokens.shape)}"
            )
        return mask.bool()

    def run(
        self, backbone: nn.Module, inputs: Mapping[str, torch.Tensor], head: HeadSpec
    ) -> torch.Tensor:
        outputs = backbone(**self.model_inputs(inputs), **self.forward_kwargs)
        return outputs.logits if head.kind == "causal_lm" else outputs.last_hidden_state

    # ----------------------------------------------------------------- wiring

    def attention_outputs(self, backbone: nn.Module) -> int:
        """How many items the replaced attention module returns (output, weights, ...)."""
        return 2

    def wire_mixer(
        self, backbone: nn.Module, slot: AttentionSlot, mixer: nn.Module, padding: PaddingState
    ) -> None:
        setattr(
            slot.parent,
            slot.attribute,
            MixerSlot(mixer, padding, self.attention_outputs(backbone)),
        )
        # attention masks are skipped only once no attention is left (a hybrid keeps some)
        if all(isinstance(other.module, MixerSlot) for other in self.attention_slots(backbone)):
            backbone.config._attn_implementation = NO_ATTENTION


class CausalTextFamily(TransformersFamily):
    """Decoder-only language models: token inputs and a causal LM head.

    Generation also passes ``cache``, a transformers cache, on to the layers that kept their
    attention; without it no keys and values are kept.
    """

    causal = True
    modality = "text"
    has_lm_head = True
    input_names = ("input_ids", "attention_mask")
    generation_inputs = ("cache",)
    forward_kwargs = MappingProxyType({"use_cache": False})
