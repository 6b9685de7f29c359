"""Llama-layout decoders (Llama, SmolLM2), from transformers checkpoints or GGUF files.

``layer.self_attn`` is replaced. Grouped-query key/value projections are expanded to one head
per query head, so mixers always see projections of the full attention width.
"""

from __future__ import annotations

from cald_framework.contracts import AttentionProjections, AttentionSlot

from .base import CausalTextFamily
from .wiring import repeat_heads


class LlamaFamily(CausalTextFamily):
    name = "llama"
    description = "Llama-layout causal language models (e.g. SmolLM2), also from GGUF files"
    layers_path = "layers"
    attention_path = "self_attn"

    def projections(self, slot: AttentionSlot) -> AttentionProjections:
        attention = slot.module
        kv_heads = attention.config.num_key_value_heads
        groups = attention.config.num_attention_heads // kv_heads
        return AttentionProjections(
            attention.q_proj,
            repeat_heads(attention.k_proj, kv_heads, groups),
            repeat_heads(attention.v_proj, kv_heads, groups),
            attention.o_proj,
        )
