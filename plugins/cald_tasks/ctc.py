"""Speech recognition with CTC over characters: vocabulary, loss, greedy decoding, WER and CER."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

from cald_framework.contracts import (
    CaldOutput,
    HeadSpec,
    MetricAccumulator,
    Task,
    TaskData,
)
from cald_framework.errors import CaldError, DataError

from .encoding import encode_splits
from .loading import load_splits
from .metrics import char_error_rate, word_error_rate
from .modality import AudioModality
from .options import CtcOptions
from .rows import LabelledEncoder, RowProblem
from .tensors import upcast
from .text import text_cell

BLANK = "<blank>"
UNKNOWN = "<unk>"
WORD_DELIMITER = "|"


def normalize_transcript(text: str, case: Literal["keep", "lower", "upper"]) -> str:
    """Single spaces between words, none at the ends, and the requested case."""
    text = " ".join(text.split())
    return {"keep": text, "lower": text.lower(), "upper": text.upper()}[case]


@dataclass(frozen=True)
class CharVocabulary:
    """CTC output tokens by id: the blank at 0, ``|`` for the space between words.

    Characters missing from the vocabulary become ``<unk>`` when it has one, and make the row
    unusable otherwise. Tokens longer than one character (``<unk>``, ``<s>``) decode to nothing.
    """

    tokens: tuple[str, ...]
    ids: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError(f"CTC vocabulary has duplicate tokens: {list(self.tokens)}")
        if WORD_DELIMITER not in self.tokens[1:]:
            raise DataError(
                f"CTC vocabulary needs the word delimiter {WORD_DELIMITER!r} after the blank "
                f"(id 0); it has: {' '.join(self.tokens[:20])}"
            )
        object.__setattr__(self, "ids", {token: index for index, token in enumerate(self.tokens)})

    @classmethod
    def from_transcripts(cls, transcripts: Iterable[str]) -> CharVocabulary:
        characters = set().union(*(set(text) for text in transcripts)) - {" "}
        return cls((BLANK, UNKNOWN, WORD_DELIMITER, *sorted(characters)))

    @classmethod
    def from_spec(cls, spec: list[str] | str) -> CharVocabulary:
        """A token list, or a file: a JSON list, a JSON ``{token: id}`` object, or token lines."""
        if isinstance(spec, list):
            return cls(tuple(spec))
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"CTC vocabulary {spec!r}: no such file")
        if path.suffix.lower() != ".json":
            lines = path.read_text(encoding="utf-8").splitlines()
            return cls(tuple(line for line in lines if line.strip()))
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataError(f"CTC vocabulary {path}: not valid JSON ({error})") from None
        if isinstance(loaded, dict):
            if sorted(loaded.values()) != list(range(len(loaded))):
                raise DataError(f"CTC vocabulary {path}: the ids must be 0..{len(loaded) - 1}")
            loaded = sorted(loaded, key=loaded.__getitem__)
        return cls(tuple(str(token) for token in loaded))

    def encode(self, text: str) -> list[int]:
        unknown = self.ids.get(UNKNOWN)
        ids = []
        for character in text:
            index = self.ids.get(WORD_DELIMITER if character == " " else character, unknown)
            if index is None:
                raise RowProblem(f"character {character!r} is not in the CTC vocabulary")
            ids.append(index)
        return ids

    def decode(self, frame_ids: list[int]) -> str:
        """Greedy CTC decoding: collapse repeats, drop blanks, ``|`` becomes a space."""
        pieces = []
        previous = None
        for index in frame_ids:
            if index != previous and index != 0:
                token = self.tokens[index]
                pieces.append(" " if token == WORD_DELIMITER else token if len(token) == 1 else "")
            previous = index
        return " ".join("".join(pieces).split())


@dataclass(frozen=True)
class TranscriptTarget:
    """The normalised transcript as character ids, and as text for WER."""

    column: str
    vocabulary: CharVocabulary
    case: Literal["keep", "lower", "upper"]
    columns: ClassVar[tuple[str, ...]] = ("labels", "text")

    def prepare(self, row: dict[str, Any]) -> tuple[list[int], str]:
        text = normalize_transcript(text_cell(row, self.column), self.case)
        return self.vocabulary.encode(text), text

    def encode(self, values: list[tuple[list[int], str]]) -> dict[str, list[Any]]:
        return {"labels": [ids for ids, _ in values], "text": [text for _, text in values]}


def ctc_loss(logits: torch.Tensor, frame_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each row's CTC loss divided by its label length (blank = 0).

    Frames come from the mask, label lengths from the ``-100`` padding; rows whose labels are
    longer than their frames give 0 instead of infinity.
    """
    log_probs = F.log_softmax(upcast(logits), dim=-1).transpose(0, 1)
    valid = labels >= 0
    return F.ctc_loss(
        log_probs,
        labels[valid],
        frame_mask.sum(-1),
        valid.sum(-1),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


def ctc_processor(feature_extractor: Any, vocabulary: CharVocabulary) -> Wav2Vec2Processor:
    """``feature_extractor`` with a tokenizer that decodes ``vocabulary`` ids the CTC way.

    The blank is the tokenizer's padding token, which transformers' CTC decoding drops after
    collapsing repeats; there are no sentence-start or -end tokens, so the tokenizer has
    exactly the head's outputs.
    """
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps(vocabulary.ids), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            pad_token=vocabulary.tokens[0],
            unk_token=UNKNOWN,
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,
            eos_token=None,
        )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


class TranscriptAccumulator(MetricAccumulator):
    def __init__(self, vocabulary: CharVocabulary):
        self.vocabulary = vocabulary
        self.hypotheses: list[str] = []
        self.references: list[str] = []

    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None:
        best = output.logits.argmax(-1)
        for frames, count in zip(best.tolist(), output.hidden_mask.sum(-1).tolist(), strict=True):
            self.hypotheses.append(self.vocabulary.decode(frames[:count]))
        self.references.extend(batch["text"])

    def compute(self) -> dict[str, float]:
        return {
            "wer": word_error_rate(self.references, self.hypotheses),
            "cer": char_error_rate(self.references, self.hypotheses),
        }


class CtcAsrTask(AudioModality, Task):
    """Frame-level linear head over characters, trained with CTC and scored by WER."""

    name = "ctc-asr"
    primary_metric: ClassVar[str] = "wer"
    higher_is_better: ClassVar[bool] = False
    options: CtcOptions

    def __init__(self, options: CtcOptions):
        super().__init__(options)
        self.vocabulary: CharVocabulary | None = None

    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        inputs = self.inputs(preprocessor)
        column = self.options.transcript_column
        raw = load_splits(self.options, seed, [self.options.audio_column, column])
        self.vocabulary = self._vocabulary(raw.train.rows.unique(column))
        target = TranscriptTarget(column, self.vocabulary, self.options.text_case)
        splits = encode_splits(self.options, raw, LabelledEncoder(inputs, target))
        return splits.task_data(
            self.collator(inputs, label_sequences=True, extras=("text",)),
            HeadSpec("token_classification", len(self.vocabulary.tokens)),
            {
                "vocab": list(self.vocabulary.tokens),
                "blank_id": 0,
                "word_delimiter": WORD_DELIMITER,
            },
        )

    def _vocabulary(self, transcripts: list[Any]) -> CharVocabulary:
        if self.options.vocab is not None:
            return CharVocabulary.from_spec(self.options.vocab)
        case = self.options.text_case
        return CharVocabulary.from_transcripts(
            normalize_transcript(text, case) for text in transcripts if isinstance(text, str)
        )

    def inference_preprocessor(self, preprocessor: Any) -> Wav2Vec2Processor:
        """The feature extractor with a CTC tokenizer over the vocabulary, as ASR pipelines use."""
        return ctc_processor(preprocessor, self.built_vocabulary())

    def built_vocabulary(self) -> CharVocabulary:
        if self.vocabulary is None:
            raise CaldError(
                f"{self.name}: build_data must run before metrics or export "
                "(it builds the vocabulary)"
            )
        return self.vocabulary

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        return ctc_loss(output.logits, output.hidden_mask, batch["labels"])

    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return output.logits, output.hidden_mask

    def metrics(self) -> MetricAccumulator:
        return TranscriptAccumulator(self.built_vocabulary())
