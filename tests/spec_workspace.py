"""The working directory that the CI specs (``specs/ci/*.toml``) run in: tiny models and data.

The CI specs name ``./tiny/...`` paths, relative to the working directory, so a test builds this
folder once, changes into it and runs the shipped spec files as they are. Every model is built
from a config with random weights; the data is made up (words for text, sine tones for audio),
so nothing is downloaded and everything is written in about a second.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
from cald_tasks.testing import word_level_tokenizer, write_tone
from transformers import (
    BertConfig,
    BertModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from .test_pipeline import FILLER, NEGATIVE, POSITIVE, review

REPO = Path(__file__).resolve().parents[1]
CI_SPECS = REPO / "specs" / "ci"

#: speaker -> the pitch (Hz) of the tones it "says"
SPEAKERS = {"ann": 220.0, "bob": 330.0}
#: intent -> (scenario, action, transcript)
INTENTS = {
    "lights_on": ("lights", "on", "lights on"),
    "lights_off": ("lights", "off", "lights off"),
    "music_play": ("music", "play", "play music"),
    "music_stop": ("music", "stop", "stop music"),
}
#: how often each speaker says each intent, and in which split
TAKES = ("train", "train", "validation")
RATE = 16_000


def _write_text_data(root: Path) -> None:
    rng = random.Random(0)
    rows = ["text,label"] + [
        f"{review(rng, label == 'fresh')},{label}" for label in ["fresh", "rotten"] * 24
    ]
    (root / "reviews.csv").write_text("\n".join(rows) + "\n")
    lines = [review(rng, rng.random() < 0.5) for _ in range(120)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")


def _write_speech_data(root: Path) -> None:
    """Tones whose pitch depends on the speaker and the intent, with a SLURP-like manifest."""
    folder = root / "speech"
    rows = []
    for speaker, pitch in SPEAKERS.items():
        for index, (intent, (scenario, action, transcript)) in enumerate(INTENTS.items()):
            for take, split in enumerate(TAKES):
                path = f"audio/{speaker}/{intent}_{take}.wav"
                seconds = 0.15 + 0.05 * take
                write_tone(folder / path, pitch + 60.0 * index, seconds, RATE)
                rows.append([path, speaker, scenario, action, intent, transcript, split])
    with (folder / "manifest.csv").open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["path", "speaker", "scenario", "action", "intent", "transcript", "split"])
        writer.writerows(rows)


def _save_text_models(root: Path) -> None:
    tokenizer = word_level_tokenizer(POSITIVE + NEGATIVE + FILLER)
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
    }
    BertModel(BertConfig(**common)).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    neox = GPTNeoXConfig(**common, rotary_pct=0.5, eos_token_id=2, pad_token_id=0)
    GPTNeoXForCausalLM(neox).save_pretrained(root / "gpt-neox")
    tokenizer.save_pretrained(root / "gpt-neox")


def _save_speech_model(root: Path) -> None:
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(root / "wav2vec2")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "wav2vec2")


def build_workspace(root: Path) -> Path:
    """Write ``root/tiny/`` (models and data that the CI specs name) and return ``root``."""
    tiny = root / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    _write_text_data(tiny)
    _write_speech_data(tiny)
    _save_text_models(tiny)
    _save_speech_model(tiny)
    return root
