"""Tiny models of the built-in source families: backbone configs, and saved model directories.

Every model is built from a config with random weights (seeded), in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerBase,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from cald_framework.contracts import HeadSpec


def text_shape(hidden_size: int = 16, max_positions: int = 32) -> dict[str, int]:
    """Two layers over two heads, the feed-forward twice as wide as the model."""
    return {
        "hidden_size": hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": max_positions,
    }


#: the text models' shape at 40 positions, over a 60-word vocabulary
_TEXT = {"vocab_size": 60, **text_shape(max_positions=40)}
#: two layers of width 16 over a two-layer feature encoder: the shape of every tiny wav2vec2
_AUDIO_SHAPE = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "conv_dim": (8, 8),
    "conv_stride": (5, 2),
    "conv_kernel": (10, 3),
    "num_conv_pos_embeddings": 4,
    "num_conv_pos_embedding_groups": 2,
}
_AUDIO = {**_AUDIO_SHAPE, "vocab_size": 12}

#: case -> (source family, backbone config, head); every case builds in well under a second
TINY_MODELS: dict[str, tuple[str, dict[str, Any], HeadSpec]] = {
    "bert": ("bert", {"model_type": "bert", **_TEXT}, HeadSpec("classification", 3)),
    "roberta": (
        "bert",
        {"model_type": "roberta", **_TEXT, "num_attention_heads": 4, "pad_token_id": 1},
        HeadSpec("classification", 2),
    ),
    "gpt-neox": (
        "gpt-neox",
        {"model_type": "gpt_neox", **_TEXT, "num_attention_heads": 4, "rotary_pct": 0.5},
        HeadSpec("causal_lm"),
    ),
    "llama": (
        "llama",
        {
            "model_type": "llama",
            **_TEXT,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
        },
        HeadSpec("causal_lm"),
    ),
    "llama-classifier": (
        "llama",
        {"model_type": "llama", **_TEXT, "num_attention_heads": 4, "num_key_value_heads": 4},
        HeadSpec("classification", 4),
    ),
    "wav2vec2": (
        "wav2vec2",
        {"model_type": "wav2vec2", **_AUDIO},
        HeadSpec("token_classification", 7),
    ),
    "wav2vec2-stable": (
        "wav2vec2",
        {
            "model_type": "wav2vec2",
            "do_stable_layer_norm": True,
            "feat_extract_norm": "layer",
            **_AUDIO,
        },
        HeadSpec("classification", 3),
    ),
    # layer-normed feature encoders (as in the large checkpoints) see no padding at all
    "hubert": (
        "wav2vec2",
        {"model_type": "hubert", "feat_extract_norm": "layer", **_AUDIO},
        HeadSpec("token_classification", 7),
    ),
    "wavlm": (
        "wav2vec2",
        {"model_type": "wavlm", "feat_extract_norm": "layer", **_AUDIO},
        HeadSpec("classification", 3),
    ),
}


def save_bert(
    directory: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 16,
    max_positions: int = 32,
    extra_vocab: int = 0,
    dropout: float = 0.1,
) -> None:
    """A randomly initialised BERT of :func:`text_shape` and its tokenizer.

    ``extra_vocab``: the tokenizer has that many words more than the model has embeddings.
    """
    config = BertConfig(
        vocab_size=len(tokenizer) - extra_vocab,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **text_shape(hidden_size, max_positions),
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_gpt_neox(
    directory: Path, tokenizer: PreTrainedTokenizerBase, *, max_positions: int = 32
) -> None:
    """A randomly initialised GPT-NeoX of :func:`text_shape` (rotary on half of each head)."""
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        rotary_pct=0.5,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **text_shape(max_positions=max_positions),
    )
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_wav2vec2(directory: Path) -> None:
    """A randomly initialised two-layer wav2vec2 (stable layer norm) and its feature extractor."""
    config = Wav2Vec2Config(**_AUDIO_SHAPE, feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(directory)
