"""Offline stand-ins for tests and examples: a word-level tokenizer and tone WAV files.

Real tokenizers come from a hub or an asset; these let a test build task data in milliseconds
with nothing downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

#: special tokens of :func:`word_level_tokenizer`, with ids 0, 1, 2
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")


def word_level_tokenizer(
    texts: Iterable[str],
    model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
) -> PreTrainedTokenizerFast:
    """One id per whitespace-separated word of ``texts`` (after the special tokens), in order of
    first appearance; other words map to ``[UNK]``."""
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for text in texts:
        for word in text.split():
            vocabulary.setdefault(word, len(vocabulary))
    model = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token="[PAD]",
        unk_token="[UNK]",
        eos_token="[EOS]",
        model_input_names=list(model_input_names),
    )


def tone(frequency: float, seconds: float, rate: int) -> np.ndarray:
    """A sine of amplitude 0.5, as float32."""
    time = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def write_tone(path: Path, frequency: float, seconds: float, rate: int) -> Path:
    """Write :func:`tone` as a 16-bit WAV file (creating its directory) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(frequency, seconds, rate), rate, subtype="PCM_16")
    return path
