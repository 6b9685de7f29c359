"""Text stand-ins: a word-level tokenizer and made-up movie reviews.

Real tokenizers come from a hub or an asset; this one lets a test build task data in
milliseconds with nothing downloaded.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

#: special tokens of :func:`word_level_tokenizer`, with ids 0, 1, 2
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")

#: review label -> the words that carry it
TONE = {"fresh": ["great", "superb", "moving", "fun"], "rotten": ["dull", "boring", "messy", "flat"]}
#: words that carry no label
FILLER = ["the", "film", "was", "a", "plot", "and", "cast", "very"]
#: every word a review may hold
REVIEW_WORDS = [word for words in TONE.values() for word in words] + FILLER


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


def review(rng: random.Random, label: str) -> str:
    """Six words in random order: four fillers and two of ``label``'s :data:`TONE`."""
    words = rng.sample(FILLER, 4) + rng.sample(TONE[label], 2)
    rng.shuffle(words)
    return " ".join(words)


def write_reviews(path: Path, rows: int = 64) -> None:
    """``rows`` labelled reviews, alternating fresh and rotten, as a CSV with a header."""
    rng = random.Random(0)
    labels = [("fresh", "rotten")[index % 2] for index in range(rows)]
    lines = ["text,label"] + [f"{review(rng, label)},{label}" for label in labels]
    path.write_text("\n".join(lines) + "\n")


def write_corpus(path: Path, lines: int = 120) -> None:
    """``lines`` unlabelled reviews of either tone, one per line (language-model text)."""
    rng = random.Random(1)
    path.write_text("\n".join(review(rng, rng.choice(list(TONE))) for _ in range(lines)) + "\n")
