"""BERT-layout encoders: BERT, RoBERTa and anything AutoModel loads with the same layers.

Only the self-attention core (``layer.attention.self``) is replaced; the attention's output
dense and LayerNorm (``layer.attention.output``) stay and are transferred.
"""

from __future__ import annotations

from torch import nn

from cald_framework.contracts import AttentionProjections, AttentionSlot
from cald_framework.errors import CaldError

from .base import TransformersFamily


class BertFamily(TransformersFamily):
    name = "bert"
    description = "BERT-layout encoders (BERT, RoBERTa, sentence-transformers checkpoints)"
    causal = False
    modality = "text"
    input_names = ("input_ids", "attention_mask", "token_type_ids")
    layers_path = "encoder.layer"
    attention_path = "attention.self"

    def adopt(self, backbone: nn.Module) -> nn.Module:
        if backbone.config.is_decoder:
            raise CaldError(
                f"source 'bert' converts encoders only; {type(backbone).__name__} is a decoder"
            )
        if getattr(backbone, "pooler", None) is not None:
            # the host pools over valid positions; an unused pooler would only hold dead weights
            backbone.pooler = None
        return super().adopt(backbone)

    def projections(self, slot: AttentionSlot) -> AttentionProjections:
        attention = getattr(slot.parent, slot.attribute)
        return AttentionProjections(attention.query, attention.key, attention.value)
