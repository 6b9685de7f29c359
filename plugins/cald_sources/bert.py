"""BERT-layout encoders: BERT, RoBERTa and anything AutoModel loads with the same layers.

Only the self-attention core (``layer.attention.self``) is replaced; the attention's output
dense and LayerNorm (``layer.attention.output``) stay and are transferred.
"""

from __future__ import annotations

import torch
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
    slot_has_output = False

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
        attention = slot.module
        return AttentionProjections(attention.query, attention.key, attention.value)

    def extend_positions(self, backbone: nn.Module, length: int) -> bool:
        """Grow the absolute position table to ``length`` positions with N(0, initializer_range)
        rows, and the ``position_ids``/``token_type_ids`` buffers with it.

        RoBERTa-style tables (embeddings with a ``padding_idx``) number positions from
        ``padding_idx + 1``, so they need that many rows more.
        """
        embeddings = backbone.base_model.embeddings
        table = embeddings.position_embeddings
        offset = getattr(embeddings, "padding_idx", None)
        rows = length if offset is None else length + offset + 1
        if table.num_embeddings >= rows:
            return False
        weight = table.weight.detach()
        extra = torch.empty(rows - table.num_embeddings, weight.shape[1], dtype=weight.dtype)
        extra.normal_(0.0, backbone.config.initializer_range)
        grown = nn.Embedding.from_pretrained(
            torch.cat([weight, extra.to(weight.device)]), freeze=False, padding_idx=table.padding_idx
        )
        embeddings.position_embeddings = grown
        positions = torch.arange(rows, device=weight.device).expand(1, -1)
        embeddings.position_ids = positions
        if getattr(embeddings, "token_type_ids", None) is not None:
            embeddings.token_type_ids = torch.zeros_like(positions)
        backbone.config.max_position_embeddings = rows
        return True
