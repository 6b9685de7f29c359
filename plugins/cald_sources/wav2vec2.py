"""Speech encoders with the Wav2Vec2 layout: Wav2Vec2, HuBERT and WavLM base models.

LayerDrop and SpecAugment masking are switched off by default so that a teacher and its
student see the same frames and their hidden states stay comparable layer by layer; the spec's
``[teacher.config]`` and ``[student.config]`` may switch them on (the paper fine-tuned with
``mask_time_prob = 0.1``), and a masking probability above 0 turns ``apply_spec_augment`` on
with it. Hidden states are frames:
the padding mask is derived from the sample-level ``attention_mask`` through the feature
encoder's output lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import AutoFeatureExtractor, PretrainedConfig

from cald_framework.contracts import AttentionProjections, AttentionSlot
from cald_framework.errors import CaldError

from .base import TransformersFamily


#: the config keys that switch SpecAugment masking on
SPEC_AUGMENT_PROBABILITIES = ("mask_time_prob", "mask_feature_prob")


class Wav2Vec2Family(TransformersFamily):
    name = "wav2vec2"
    description = "Wav2Vec2, HuBERT and WavLM speech encoders"
    causal = False
    modality = "audio"
    input_names = ("input_values", "attention_mask")
    preprocessor_class = AutoFeatureExtractor
    layers_path = "encoder.layers"
    attention_path = "attention"

    def prepare_config(self, config: PretrainedConfig) -> PretrainedConfig:
        if getattr(config, "add_adapter", False):
            raise CaldError(
                f"source 'wav2vec2' does not support {config.model_type} models with an adapter "
                "(add_adapter=True): the adapter changes the frame rate after the encoder"
            )
        config.layerdrop = 0.0
        config.mask_time_prob = 0.0
        config.mask_feature_prob = 0.0
        config.apply_spec_augment = False
        return config

    def implied_settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        masking = any(overrides.get(key, 0) > 0 for key in SPEC_AUGMENT_PROBABILITIES)
        return {"apply_spec_augment": True} if masking else {}

    def attention_outputs(self, backbone: nn.Module) -> int:
        # WavLM's attention also returns the relative position bias it hands to the next layer
        return 3 if backbone.config.model_type == "wavlm" else 2

    def projections(self, slot: AttentionSlot) -> AttentionProjections:
        attention = slot.module
        return AttentionProjections(
            attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj
        )

    def hidden_mask(self, backbone: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        values = self.model_inputs(inputs)["input_values"]
        batch, samples = values.shape
        mask = inputs.get("attention_mask")
        if mask is not None and mask.shape != values.shape:
            raise CaldError(
                f"wav2vec2 model: attention_mask {tuple(mask.shape)} does not match "
                f"input_values {tuple(values.shape)}"
            )
        device = values.device
        lengths = torch.full((batch,), samples, device=device) if mask is None else mask.sum(-1)
        frames = int(backbone._get_feat_extract_output_lengths(torch.tensor(samples)))
        valid = backbone._get_feat_extract_output_lengths(lengths)
        return torch.arange(frames, device=device) < valid[:, None]
