"""Causal language modelling: documents joined with EOS, cut into blocks, next-token CE."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar

import datasets
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from cald_framework.contracts import (
    CaldOutput,
    HeadSpec,
    MetricAccumulator,
    Task,
    TaskData,
)
from cald_framework.errors import DataError

from .collate import IGNORE_INDEX, Collator
from .encoding import encode_splits
from .loading import Origin, load_splits
from .metrics import perplexity
from .options import CausalLMOptions
from .rows import cached_map
from .tensors import upcast
from .text import pad_id, require_tokenizer


@dataclass(frozen=True)
class DocumentTokens:
    """Each row is a document: its tokens then EOS.

    A blank or missing text adds nothing, so the blank lines that separate paragraphs in text
    files are not errors; this task therefore never has bad rows.
    """

    tokenizer: PreTrainedTokenizerBase
    text_column: str
    columns: ClassVar[tuple[str, ...]] = ("input_ids",)
    batch_size: ClassVar[int] = 1000

    def prepare(self, row: dict[str, Any], origin: Origin) -> str:
        value = row[self.text_column]
        return value if isinstance(value, str) else ""

    def encode(self, texts: list[str]) -> dict[str, list[Any]]:
        tokens = self.tokenizer(texts)["input_ids"]
        eos = [self.tokenizer.eos_token_id]
        return {
            "input_ids": [
                ids + eos if text.strip() else [] for ids, text in zip(tokens, texts, strict=True)
            ]
        }


@dataclass(frozen=True)
class PackBlocks:
    """Concatenate a batch of documents and cut it into full blocks (the tail is dropped)."""

    block_size: int

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = list(chain.from_iterable(batch["input_ids"]))
        end = len(ids) - len(ids) % self.block_size
        return {"input_ids": [ids[i : i + self.block_size] for i in range(0, end, self.block_size)]}


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood (position t predicts t + 1) and token count."""
    targets = labels[:, 1:]
    total = F.cross_entropy(
        upcast(logits[:, :-1]).flatten(0, 1),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, (targets != IGNORE_INDEX).sum()


class PerplexityAccumulator(MetricAccumulator):
    def __init__(self) -> None:
        self.total_nll = 0.0
        self.tokens = 0

    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None:
        total, count = token_nll(output.logits.detach(), batch["labels"])
        self.total_nll += float(total)
        self.tokens += int(count)

    def compute(self) -> dict[str, float]:
        return {"perplexity": perplexity(self.total_nll, self.tokens)}


class CausalLMTask(Task):
    """Next-token prediction with the backbone's own LM head, scored by perplexity."""

    name = "causal-lm"
    primary_metric: ClassVar[str] = "perplexity"
    higher_is_better: ClassVar[bool] = False
    modality: ClassVar = "text"
    options: CausalLMOptions

    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        tokenizer = require_tokenizer(preprocessor, self.name)
        if tokenizer.eos_token_id is None:
            raise DataError(f"{self.name}: the tokenizer has no EOS token to join documents with")
        raw = load_splits(self.options, seed, [self.options.text_column])
        documents = encode_splits(
            self.options, raw, DocumentTokens(tokenizer, self.options.text_column)
        )
        blocks = documents.map(self._pack)
        collate = Collator(
            ("input_ids",),
            {"input_ids": pad_id(tokenizer)},
            label_column="input_ids",
            label_sequences=True,
        )
        return blocks.task_data(
            collate,
            HeadSpec("causal_lm", len(tokenizer)),
            {"block_size": self.options.block_size},
            grouped_by_length=False,
        )

    def _pack(self, documents: datasets.Dataset, role: str) -> datasets.Dataset:
        size = self.options.block_size
        blocks = cached_map(documents, PackBlocks(size), self.options.cache_dir, "Packing blocks")
        if len(blocks) == 0:
            raise DataError(
                f"{self.name}: the {role} rows hold fewer tokens than one block "
                f"(block_size = {size})"
            )
        return blocks

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        total, count = token_nll(output.logits, batch["labels"])
        return total / count.clamp(min=1)

    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return output.logits, batch["inputs"]["attention_mask"].bool()

    def metrics(self) -> MetricAccumulator:
        return PerplexityAccumulator()
