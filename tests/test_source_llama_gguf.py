"""Llama teachers from GGUF files: a tiny model is written with the gguf package, then loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cald_framework.contracts import HeadSpec
from cald_framework.modeling import CaldModel

gguf = pytest.importorskip("gguf", reason="the gguf package (the 'lm' extra) is not installed")

HEADS, KV_HEADS, LAYERS = 4, 2, 2

#: GGUF tensor name -> transformers name (``{i}`` is the layer index)
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _interleave_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for query/key weights (transformers undoes it when loading)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, -1).swapaxes(1, 2).reshape(weight.shape)


def _write_gguf(model: LlamaForCausalLM, path: Path) -> None:
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.hidden_size // HEADS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"▁w{index}" for index in range(config.vocab_size - 3)]
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([2, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    weights = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for index in range(config.num_hidden_layers):
        for gguf_name, name in LAYER_TENSORS.items():
            weight = weights[f"model.layers.{index}.{name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                weight = _interleave_rotary(weight, HEADS if gguf_name == "attn_q" else KV_HEADS)
            writer.add_tensor(f"blk.{index}.{gguf_name}.weight", weight)
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def gguf_checkpoint(tmp_path_factory) -> tuple[LlamaForCausalLM, Path]:
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    _write_gguf(model, path)
    return model, path


@pytest.mark.parametrize("reference", ["{directory}::{name}", "{directory}/{name}"])
def test_a_gguf_teacher_holds_the_written_weights(gguf_checkpoint, source_plugins, reference):
    original, path = gguf_checkpoint
    model = reference.format(directory=path.parent, name=path.name)
    teacher = CaldModel.from_source(
        "llama", model, HeadSpec("causal_lm"), source=source_plugins["llama"]
    )
    loaded = teacher.backbone.state_dict()
    assert loaded.keys() == original.state_dict().keys()
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    assert teacher.config.source_model == model
    ids = torch.tensor([[1, 5, 9, 4]])
    torch.testing.assert_close(teacher.eval()(input_ids=ids).logits, original(ids).logits)


def test_the_gguf_tokenizer_loads_with_the_model(gguf_checkpoint, source_plugins):
    _, path = gguf_checkpoint
    tokenizer = source_plugins["llama"].family().load_preprocessor(f"{path.parent}::{path.name}")
    assert tokenizer.convert_tokens_to_ids(["<s>", "▁w0", "▁w36"]) == [1, 3, 39]
