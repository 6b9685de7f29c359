"""GPT-NeoX (Pythia): decoder layers with a parallel residual and a fused QKV projection.

The whole ``layer.attention`` module (fused QKV, rotary, output dense) is replaced; the mixer's
output joins the parallel residual exactly where attention's did.
"""

from __future__ import annotations

from cald_framework.contracts import AttentionProjections, AttentionSlot

from .base import CausalTextFamily
from .wiring import split_per_head


class GPTNeoXFamily(CausalTextFamily):
    name = "gpt-neox"
    description = "GPT-NeoX causal language models (Pythia)"
    layers_path = "layers"
    attention_path = "attention"

    def projections(self, slot: AttentionSlot) -> AttentionProjections:
        attention = slot.module
        query, key, value = split_per_head(
            attention.query_key_value, attention.config.num_attention_heads, parts=3
        )
        return AttentionProjections(query, key, value, attention.dense)
