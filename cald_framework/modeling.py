"""CaldModel: a source backbone, a host head and (for students) mixers in place of attention.

Teachers and students are the same class: a student is a teacher whose config names a mixer.
Everything needed to rebuild a model lives in its :class:`CaldConfig` (source family, backbone
config, head, mixer and options), so :meth:`CaldModel.from_pretrained` rebuilds it through the
plugin registries and then loads the weights from safetensors (never from a pickle).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    CausalLMOutput,
    CausalLMOutputWithPast,
    ModelOutput,
    SequenceClassifierOutput,
)

from .contracts import (
    CaldOutput,
    HeadSpec,
    MixerContext,
    MixerPlugin,
    PaddingState,
    PluginOptions,
    SourcePlugin,
)
from .errors import CaldError, CheckpointError, PluginError
from .generation import CaldGenerationMixin
from .heads import build_head
from .validation import validate_options

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
GENERATION_CONFIG_NAME = "generation_config.json"


class CaldConfig(PretrainedConfig):
    """What rebuilds a :class:`CaldModel`: source family and its config, head, mixer, task data."""

    model_type = "cald"

    def __init__(
        self,
        source: str = "",
        source_config: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
        mixer: str | None = None,
        mixer_options: dict[str, Any] | None = None,
        max_sequence_length: int | None = None,
        task_metadata: dict[str, Any] | None = None,
        source_model: str | None = None,
        kept_attention: list[int] | None = None,
        config_overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        #: registered name of the source family
        self.source = source
        #: the backbone's own config, as the family's ``backbone_config`` wrote it
        self.source_config = dict(source_config or {})
        #: a :class:`HeadSpec` as a dict
        self.head = dict(head or {"kind": "classification", "num_labels": 0})
        #: registered name of the mixer, or ``None`` for a model that still has attention
        self.mixer = mixer
        self.mixer_options = dict(mixer_options or {})
        #: the longest sequence the student must handle (sizes e.g. Linformer projections);
        #: not ``max_length``, which transformers reserves for generation
        self.max_sequence_length = max_sequence_length
        #: anything the task saves with the model (label names, CTC vocabulary)
        self.task_metadata = dict(task_metadata or {})
        #: where the pretrained weights came from (hub id or directory), for provenance
        self.source_model = source_model
        #: layers whose attention a student kept (a hybrid); mixers replace only the others
        self.kept_attention = sorted(kept_attention or [])
        #: settings of the backbone's config applied over the family's own (``[teacher.config]``
        #: or ``[student.config]``), kept so that a reloaded model is built the same way
        self.config_overrides = dict(config_overrides or {})
        super().__init__(**kwargs)

    @property
    def head_spec(self) -> HeadSpec:
        return HeadSpec(**self.head)


def _registries() -> Any:
    from .plugin_manager import load_registries

    return load_registries()


def keep_input(
    states: dict[int, torch.Tensor], index: int, module: nn.Module, args: tuple, kwargs: dict
) -> None:
    """A forward pre-hook (``with_kwargs=True``, ``states`` and ``index`` bound) that keeps the
    module's hidden-state input, given by position or as ``hidden_states``."""
    states[index] = args[0] if args else kwargs["hidden_states"]


def keep_output(
    states: dict[int, torch.Tensor], index: int, module: nn.Module, args: tuple, output: Any
) -> None:
    """A forward hook (``states`` and ``index`` bound) that keeps the module's output, the first
    element where the module returns a tuple."""
    states[index] = output[0] if isinstance(output, tuple) else output


@dataclasses.dataclass
class LayerRecording:
    """The inputs and outputs of the layers that ran in one forward, by 1-based layer index."""

    inputs: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)

    def residual_stream(self, num_layers: int) -> tuple[torch.Tensor, ...]:
        """The stream before layer 1 and after each layer; a layer that LayerDrop skipped left
        the stream as it was, so its state repeats the one before it (as the libraries' own
        ``hidden_states`` do), and teacher and student layers still pair one to one."""
        if not self.outputs:
            raise RuntimeError("no layer ran in this forward, so no hidden state was recorded")
        states = [self.inputs[min(self.outputs)]]
        for index in range(1, num_layers + 1):
            states.append(self.outputs.get(index, states[-1]))
        return tuple(states)


@contextmanager
def _recording(layers: Sequence[nn.Module]) -> Iterator[LayerRecording]:
    """Record the input and the output of every layer that runs during one forward.

    Hooks see the residual stream itself, before any final norm, whatever the library returns
    with ``output_hidden_states``; they are removed at once, so a recomputation during
    activation checkpointing records nothing.
    """
    recording = LayerRecording()
    handles = [
        hook
        for index, layer in enumerate(layers, start=1)
        for hook in (
            layer.register_forward_pre_hook(
                partial(keep_input, recording.inputs, index), with_kwargs=True
            ),
            layer.register_forward_hook(partial(keep_output, recording.outputs, index)),
        )
    ]
    try:
        yield recording
    finally:
        for handle in handles:
            handle.remove()


def check_kept_layers(kept: Sequence[int], num_layers: int, where: str = "keep_attention") -> None:
    """Refuse kept-attention indices that a model of ``num_layers`` layers cannot honour.

    Keeping every layer would convert nothing, so at least one layer must get a mixer.
    """
    beyond = sorted(index for index in kept if not 0 <= index < num_layers)
    if beyond:
        raise CaldError(
            f"{where}: layers {beyond} do not exist; the model has {num_layers} layers "
            f"(0..{num_layers - 1})"
        )
    if len(set(kept)) >= num_layers:
        raise CaldError(
            f"{where}: keeps all {num_layers} layers, so nothing would be converted; "
            "keep fewer layers"
        )


def mixer_options(plugin: MixerPlugin, options: PluginOptions | Mapping[str, Any]) -> PluginOptions:
    """``options`` as the mixer's own option model (a mapping is validated against it, with the
    spec's wording: :class:`~cald_framework.validation.OptionsError`)."""
    if isinstance(options, plugin.options):
        return options
    if isinstance(options, PluginOptions):
        raise PluginError(
            f"mixer {plugin.name!r} takes {plugin.options.__name__} options, "
            f"got {type(options).__name__}"
        )
    return validate_options(plugin.options, options, f"mixer {plugin.name!r}")


#: what transformers' Auto classes and pipelines pass to ``from_pretrained`` that only concerns
#: finding files on the Hub or running code from it: a saved directory needs none of them
_HUB_OPTIONS = frozenset(
    {
        "trust_remote_code",
        "adapter_kwargs",
        "_from_auto",
        "_from_pipeline",
        "_commit_hash",
        "revision",
        "code_revision",
        "local_files_only",
        "cache_dir",
        "token",
    }
)


def apply_loading_options(model: CaldModel, path: Path, options: Mapping[str, Any]) -> CaldModel:
    """``model`` in the ``dtype`` that ``options`` ask for (``"auto"`` or none: float32, the
    precision every CaldModel is built and loaded in).

    Hub-only options are accepted and have nothing to do; anything else (``device_map``,
    quantisation) is refused rather than silently ignored.
    """
    left = {key: value for key, value in options.items() if key not in _HUB_OPTIONS}
    dtype = left.pop("dtype", None) or left.pop("torch_dtype", None) or "auto"
    unsupported = sorted(key for key, value in left.items() if value is not None)
    if unsupported:
        raise CheckpointError(
            f"{path}: a CaldModel cannot be loaded with {', '.join(unsupported)}; "
            "load it, then move it with .to(...)"
        )
    if dtype != "auto":
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model


class CaldModel(PreTrainedModel, CaldGenerationMixin):
    """Backbone from a source plugin + host head + optional mixers; returns :class:`CaldOutput`.

    Causal language models also ``generate()`` (:mod:`cald_framework.generation`).

    ``source`` and ``mixer`` plugins may be passed explicitly (tests, unregistered plugins);
    otherwise they are looked up by the names in the config.
    """

    config_class = CaldConfig
    base_model_prefix = "cald"
    supports_gradient_checkpointing = True

    def __init__(
        self,
        config: CaldConfig,
        *,
        source: SourcePlugin | None = None,
        mixer: MixerPlugin | None = None,
        backbone: nn.Module | None = None,
    ):
        super().__init__(config)
        self.family = (source or _registries().sources.get(config.source)).family()
        self.head_spec = config.head_spec
        if backbone is None:
            backbone = self.family.backbone_from_config(
                config.source_config, self.head_spec, config.config_overrides
            )
        self.backbone = backbone
        self.head = build_head(self.head_spec, self.family.dimensions(backbone)[0])
        #: parameters that mixers share across layers (``MixerContext.shared``)
        self.shared = nn.ModuleDict()
        self.padding_state = PaddingState()
        self.post_init()
        if config.mixer is not None:
            plugin = mixer or _registries().mixers.get(config.mixer)
            self.install_mixers(
                plugin,
                config.mixer_options,
                with_projections=False,
                keep_attention=config.kept_attention,
            )

    def get_input_embeddings(self) -> nn.Module | None:
        """The backbone's input embeddings, ``None`` where it has none (FSDP shards them apart)."""
        getter = getattr(self.backbone, "get_input_embeddings", None)
        try:
            return getter() if getter is not None else None
        except NotImplementedError:
            return None

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing to do: backbones initialise themselves, heads keep PyTorch's default init."""

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_source(
        cls,
        source_name: str,
        model: str,
        head: HeadSpec,
        *,
        max_length: int | None = None,
        task_metadata: Mapping[str, Any] | None = None,
        source: SourcePlugin | None = None,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> CaldModel:
        """A teacher with pretrained weights from ``model`` (hub id, directory or GGUF file),
        its backbone config changed by ``config_overrides``.

        Returned in eval mode, as ``from_pretrained`` returns models.
        """
        plugin = source or _registries().sources.get(source_name)
        family = plugin.family()
        overrides = dict(config_overrides or {})
        backbone = family.load_backbone(model, head, overrides)
        config = CaldConfig(
            source=source_name,
            source_config=family.backbone_config(backbone),
            head=dataclasses.asdict(head),
            max_sequence_length=max_length,
            task_metadata=dict(task_metadata or {}),
            source_model=model,
            config_overrides=overrides,
        )
        return cls(config, source=plugin, backbone=backbone).eval()

    @classmethod
    def from_source_config(
        cls,
        source_name: str,
        source_config: Mapping[str, Any],
        head: HeadSpec,
        *,
        max_length: int | None = None,
        task_metadata: Mapping[str, Any] | None = None,
        source: SourcePlugin | None = None,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> CaldModel:
        """A randomly initialised teacher from a backbone config dict (tests, tiny models)."""
        config = CaldConfig(
            source=source_name,
            source_config=dict(source_config),
            head=dataclasses.asdict(head),
            max_sequence_length=max_length,
            task_metadata=dict(task_metadata or {}),
            config_overrides=dict(config_overrides or {}),
        )
        return cls(config, source=source)

    def install_mixers(
        self,
        plugin: MixerPlugin,
        options: PluginOptions | Mapping[str, Any],
        *,
        with_projections: bool,
        keep_attention: Sequence[int] = (),
    ) -> None:
        """Replace every attention slot with a mixer from ``plugin`` and record it in the config.

        ``with_projections`` hands each mixer the projections of the attention it replaces (a
        conversion); without them the mixers are built bare, for weights loaded afterwards.
        Layers in ``keep_attention`` keep their attention (a hybrid student); every mixer still
        sees its own layer index and the model's full layer count, so per-layer options mean
        the same as in a fully converted student.
        """
        if plugin.direction == "bidirectional" and self.family.causal:
            raise PluginError(
                f"mixer {plugin.name!r} is bidirectional and cannot replace attention in the "
                f"causal source {self.config.source!r}"
            )
        validated = mixer_options(plugin, options)
        d_model, num_heads = self.family.dimensions(self.backbone)
        slots = self.family.attention_slots(self.backbone)
        check_kept_layers(keep_attention, len(slots))
        reference = next(self.backbone.parameters())
        with torch.no_grad():
            for slot in (slot for slot in slots if slot.layer_index not in keep_attention):
                projections = self.family.projections(slot)
                context = MixerContext(
                    d_model=d_model,
                    num_heads=num_heads,
                    layer_index=slot.layer_index,
                    num_layers=len(slots),
                    max_length=self.config.max_sequence_length or 0,
                    causal=self.family.causal,
                    shared=self.shared,
                    projections=projections if with_projections else None,
                    output_projection=self.family.slot_has_output,
                    projection_bias=projections.query.bias is not None,
                )
                mixer = plugin.build(validated, context)
                mixer.to(device=reference.device, dtype=reference.dtype)
                self.family.wire_mixer(self.backbone, slot, mixer, self.padding_state)
            self.shared.to(device=reference.device, dtype=reference.dtype)
        self.config.mixer = plugin.name
        self.config.mixer_options = validated.model_dump(mode="json")
        self.config.kept_attention = sorted(keep_attention)

    def reconfigured(self, config_overrides: Mapping[str, Any]) -> CaldModel:
        """This model, weights included, rebuilt with other backbone config overrides (a student
        whose ``[student.config]`` differs from its teacher's ``[teacher.config]``).

        Parameters that only one of the two configs has (wav2vec2's mask embedding exists only
        while masking is on) are dropped, or kept at their initial values.
        """
        config = copy.deepcopy(self.config)
        config.config_overrides = dict(config_overrides)
        reference = next(self.parameters())
        with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
            model = type(self)(config)
        model.load_state_dict(self.state_dict(), strict=False)
        return model.to(device=reference.device, dtype=reference.dtype).train(self.training)

    @property
    def num_layers(self) -> int:
        """How many layers the backbone has (attention slots, kept or replaced)."""
        return len(self.family.layers(self.backbone))

    # ----------------------------------------------------------------- running

    def forward(self, **inputs: Any) -> Any:
        """Run on model inputs (``input_ids``/``input_values`` and ``attention_mask``).

        A call with ``cache`` (``generate()`` makes them) is a generation step instead, see
        :meth:`~cald_framework.generation.CaldGenerationMixin.generation_forward`. Floating-point
        inputs (audio) are cast to the weights' dtype, so bf16 weights take float32 features.
        """
        if "cache" in inputs:
            return self.generation_forward(**inputs)
        inputs = {
            name: value.to(self.dtype) if value.is_floating_point() else value
            for name, value in inputs.items()
        }
        mask = self.family.hidden_mask(self.backbone, inputs)
        self.padding_state.set(mask)
        layers = self.family.layers(self.backbone)
        with _recording(layers) as recording:
            features = self.family.run(self.backbone, inputs, self.head_spec)
        logits = features if self.head is None else self.head(features, mask)
        hidden_states = recording.residual_stream(len(layers))
        return CaldOutput(logits=logits, hidden_states=hidden_states, hidden_mask=mask)

    # ----------------------------------------------------------------- saving and loading

    def save_pretrained(self, save_directory: str | Path) -> None:  # type: ignore[override]
        """Write ``config.json`` and ``model.safetensors`` (tied tensors are stored once)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        save_model(self, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        directory: str | Path,
        *,
        source: SourcePlugin | None = None,
        mixer: MixerPlugin | None = None,
        **loading: Any,
    ) -> CaldModel:
        """Rebuild a saved model through the plugins and load its weights; returns eval mode.

        ``loading`` takes what transformers' Auto classes and pipelines pass (see
        :func:`apply_loading_options`), so they can load a saved model from its directory.
        """
        path = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise CheckpointError(f"{path} is not a saved CaldModel: {name} is missing")
        model_type = CaldConfig.get_config_dict(path)[0].get("model_type")
        if model_type != CaldConfig.model_type:
            raise CheckpointError(
                f"{path} is not a saved CaldModel: its config.json is for a {model_type!r} model "
                "(give the source family's checkpoints as teacher.model)"
            )
        config = loading.pop("config", None) or CaldConfig.from_pretrained(path)
        # the random initialisation is overwritten by the saved weights; drawing it from the
        # caller's stream would shift that stream (a resumed run loads its teacher after
        # restoring the checkpoint's random state, an uninterrupted one at step 0)
        with torch.random.fork_rng(devices=[]):
            model = cls(config, source=source, mixer=mixer)
        try:
            load_model(model, path / WEIGHTS_NAME, strict=True)
        except RuntimeError as error:
            details = " ".join(str(error).split())
            raise CheckpointError(
                f"{path / WEIGHTS_NAME} does not match its config: {details[:500]}"
            ) from error
        except SafetensorError as error:
            raise CheckpointError(f"{path / WEIGHTS_NAME} is not a readable safetensors file ({error})") from error
        return apply_loading_options(model.eval(), path, loading)


# --------------------------------------------------------------------- Hugging Face task classes


class CaldForTask(CaldModel):
    """A :class:`CaldModel` that speaks transformers' task interface: keyword inputs, and the
    library's output record with ``logits``, so Auto classes and ``pipeline()`` can use it.

    The weights, config and computation are the framework's own (the same files load as either
    class); only the record returned differs. A subclass names the head kind it serves, and
    refuses a saved model whose head is another kind.
    """

    #: the :class:`HeadSpec` kind this task class runs
    head_kind: str
    #: transformers' output record for the task; built from ``logits`` (and ``hidden_states``)
    output_class: type[ModelOutput]
    #: inputs that transformers' callers add but the model has no use for
    ignored_inputs: frozenset[str] = frozenset({"return_dict", "output_attentions"})

    def __init__(self, config: CaldConfig, **plugins: Any):
        kind = config.head_spec.kind
        if kind != self.head_kind:
            raise CheckpointError(
                f"{type(self).__name__} runs a {self.head_kind} head, but this model has a "
                f"{kind} head; load it with {AUTO_CLASS_OF_HEAD.get(kind, 'AutoModel')}"
            )
        super().__init__(config, **plugins)

    def forward(  # type: ignore[override]
        self, *, output_hidden_states: bool | None = None, **inputs: Any
    ) -> ModelOutput:
        model_inputs = {
            name: value
            for name, value in inputs.items()
            if name not in self.ignored_inputs and value is not None
        }
        output = super().forward(**model_inputs)
        hidden_states = output.hidden_states if output_hidden_states else None
        return self.output_class(logits=output.logits, hidden_states=hidden_states)


class CaldForSequenceClassification(CaldForTask):
    """One label per text (``text-classification`` pipelines)."""

    head_kind = "classification"
    output_class = SequenceClassifierOutput
    main_input_name = "input_ids"


class CaldForAudioClassification(CaldForTask):
    """One label per clip (``audio-classification`` pipelines)."""

    head_kind = "classification"
    output_class = SequenceClassifierOutput
    main_input_name = "input_values"


class CaldForCTC(CaldForTask):
    """Frame-level character logits (``automatic-speech-recognition`` pipelines, CTC)."""

    head_kind = "token_classification"
    output_class = CausalLMOutput
    main_input_name = "input_values"


class CaldForCausalLM(CaldForTask):
    """A causal language model for transformers' ``generate()`` and ``text-generation``
    pipelines, with the recurrent cache of :mod:`cald_framework.generation`."""

    head_kind = "causal_lm"
    output_class = CausalLMOutputWithPast
    main_input_name = "input_ids"
    ignored_inputs = CaldForTask.ignored_inputs | {"use_cache", "position_ids", "logits_to_keep"}

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, directory: str | Path, **options: Any
    ) -> CaldForCausalLM:
        """The saved model, with the ``generation_config.json`` beside it when there is one."""
        model = super().from_pretrained(directory, **options)
        if (Path(directory) / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.from_pretrained(directory)
        return model

    def forward(self, **inputs: Any) -> ModelOutput:  # type: ignore[override]
        """A generation step (a call with ``cache``) keeps its cache in the output record."""
        if "cache" in inputs:
            return self.generation_forward(**inputs)
        return super().forward(**inputs)


#: the transformers Auto class that loads a saved model with each head kind
AUTO_CLASS_OF_HEAD = {
    "classification": "AutoModelForSequenceClassification (text) or "
    "AutoModelForAudioClassification (audio)",
    "token_classification": "AutoModelForCTC",
    "causal_lm": "AutoModelForCausalLM",
}
