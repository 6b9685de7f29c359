"""The text tasks (text-classification, causal-lm) on tiny local files, word-level tokenizer."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import datasets
import pytest
import torch
from cald_tasks.causal_lm import CausalLMTask
from cald_tasks.classification import TextClassificationTask
from cald_tasks.options import CausalLMOptions, TextClassificationOptions

from cald_framework.contracts import CaldOutput, HeadSpec
from cald_framework.errors import DataError
from cald_framework.testing.text import word_level_tokenizer

WORDS = "a good film bad really so fine plot dull ok the end"


def output(
    logits: list[list[float]] | torch.Tensor, mask: torch.Tensor | None = None
) -> CaldOutput:
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if mask is None:
        mask = torch.ones(
            logits.shape[:2] if logits.dim() == 3 else (len(logits), 1), dtype=torch.bool
        )
    return CaldOutput(logits=logits, hidden_states=(), hidden_mask=mask)


@pytest.fixture
def tokenizer():
    return word_level_tokenizer([WORDS])


@pytest.fixture
def reviews(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "train.csv").write_text(
        "text,label\na good film,pos\na bad film,neg\nreally good,pos\nso so,meh\n"
    )
    (tmp_path / "dev.csv").write_text("text,label\ngood,pos\nbad film,neg\n")
    return {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv")}


def classification(tmp_path: Path, **options) -> TextClassificationTask:
    return TextClassificationTask(
        TextClassificationOptions(dataset="csv", cache_dir=str(tmp_path / "cache"), **options)
    )


def test_text_classification_builds_sorted_labels_and_pads_dynamically(
    tmp_path: Path, tokenizer, reviews: dict[str, str]
) -> None:
    data = classification(tmp_path, data_files=reviews).build_data(tokenizer, seed=0)
    assert data.head == HeadSpec("classification", 3)
    assert data.metadata == {
        "label_names": ["meh", "neg", "pos"],
        "skipped_rows": {"train": 0, "eval": 0},
    }
    assert data.train_lengths == [3, 3, 2, 2]
    assert [int(row["labels"]) for row in data.eval] == [2, 1]

    batch = data.collate([data.train[2], data.train[3]])
    ids = tokenizer.convert_tokens_to_ids
    assert batch["inputs"]["input_ids"].tolist() == [ids(["really", "good"]), ids(["so", "so"])]
    batch = data.collate([data.train[0], data.eval[0]])
    assert batch["inputs"]["input_ids"].tolist() == [
        ids(["a", "good", "film"]),
        [ids("good"), 0, 0],
    ]
    assert batch["inputs"]["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [2, 2]


def test_text_pairs_fixed_label_order_truncation_and_token_types(tmp_path: Path) -> None:
    rows = [
        {"premise": "a good film", "hypothesis": "the end", "gold": "yes"},
        {"premise": "a dull plot really so dull", "hypothesis": "ok", "gold": "no"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = word_level_tokenizer([WORDS], ("input_ids", "token_type_ids", "attention_mask"))
    task = TextClassificationTask(
        TextClassificationOptions(
            dataset="json",
            data_files=str(path),
            eval_split=None,
            text_column="premise",
            text_pair_column="hypothesis",
            label_column="gold",
            label_names=["yes", "no"],
            max_length=4,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data = task.build_data(tokenizer, seed=0)
    assert data.eval is None
    assert data.metadata["label_names"] == ["yes", "no"]
    batch = data.collate([data.train[0], data.train[1]])
    ids = tokenizer.convert_tokens_to_ids
    # longest-first truncation to 4 tokens takes words from the longer side
    assert batch["inputs"]["input_ids"].tolist() == [
        ids(["a", "good", "the", "end"]),
        ids(["a", "dull", "plot", "ok"]),
    ]
    assert batch["inputs"]["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]
    assert batch["labels"].tolist() == [0, 1]


def test_integer_labels_sort_numerically_even_with_a_gap(tmp_path: Path, tokenizer) -> None:
    # the empty label makes the CSV reader load the column as floats
    (tmp_path / "t.csv").write_text("text,label\ngood,10\nbad,2\nok,\nfine,2\n")
    task = classification(
        tmp_path, data_files=str(tmp_path / "t.csv"), eval_split=None, on_bad_row="skip"
    )
    data = task.build_data(tokenizer, seed=0)
    assert data.metadata["label_names"] == ["2", "10"]
    assert [int(label) for label in data.train["labels"]] == [1, 0, 0]
    assert data.metadata["skipped_rows"] == {"train": 1, "eval": 0}


def test_class_label_columns_keep_their_declared_names(tmp_path: Path, tokenizer) -> None:
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["positive", "negative"]),
        }
    )
    table = datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [0, 1]}, features)
    table.to_parquet(tmp_path / "t.parquet")
    task = TextClassificationTask(
        TextClassificationOptions(
            dataset="parquet",
            data_files=str(tmp_path / "t.parquet"),
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data = task.build_data(tokenizer, seed=0)
    assert data.metadata["label_names"] == ["positive", "negative"]
    assert [int(label) for label in data.train["labels"]] == [0, 1]


def test_classification_loss_kd_logits_and_metrics(tmp_path: Path, tokenizer, reviews) -> None:
    task = classification(tmp_path, data_files=reviews)
    task.build_data(tokenizer, seed=0)
    logits = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    batch = {"labels": torch.tensor([0, 2])}
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(2 + math.e)) / 2
    assert task.loss(output(logits), batch).item() == pytest.approx(expected, rel=1e-12)
    half = CaldOutput(
        torch.tensor(logits, dtype=torch.bfloat16), (), torch.ones(2, 1, dtype=torch.bool)
    )
    assert task.loss(half, batch).dtype == torch.float32  # softmax is never taken in bf16
    assert task.kd_logits(output(logits), batch)[1] is None

    metrics = task.metrics()
    metrics.update(output(logits), batch)  # predicts 0, 1
    metrics.update(output([[0.0, 0.0, 5.0]]), {"labels": torch.tensor([2])})
    # predictions 0 1 2 vs 0 2 2: F1 per class 1, 0, 2/3
    assert metrics.compute() == pytest.approx({"accuracy": 2 / 3, "macro_f1": (1 + 0 + 2 / 3) / 3})


def test_binary_classification_also_reports_f1_of_class_one(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "t.csv").write_text("text,label\ngood,1\nbad,0\n")
    task = classification(tmp_path, data_files=str(tmp_path / "t.csv"), eval_split=None)
    task.build_data(tokenizer, seed=0)
    metrics = task.metrics()
    metrics.update(
        output([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), {"labels": torch.tensor([1, 0, 1])}
    )
    # class 1: tp 1, predicted 2, present 2 -> 1/2; class 0: tp 0 -> 0
    assert metrics.compute() == pytest.approx({"accuracy": 1 / 3, "macro_f1": 1 / 4, "f1": 1 / 2})


# ------------------------------------------------------------------ causal language modelling


def causal_lm(tmp_path: Path, lines: str, block_size: int, **options) -> CausalLMTask:
    (tmp_path / "corpus.txt").write_text(lines)
    return CausalLMTask(
        CausalLMOptions(
            dataset="text",
            data_files=str(tmp_path / "corpus.txt"),
            eval_split=None,
            block_size=block_size,
            cache_dir=str(tmp_path / "cache"),
            **options,
        )
    )


def test_causal_lm_joins_documents_with_eos_and_packs_full_blocks(
    tmp_path: Path, tokenizer
) -> None:
    task = causal_lm(tmp_path, "a good film\n\nthe end\nso bad\n", block_size=4)
    data = task.build_data(tokenizer, seed=0)
    ids = tokenizer.convert_tokens_to_ids
    stream = ids(["a", "good", "film", "[EOS]", "the", "end", "[EOS]", "so", "bad", "[EOS]"])
    assert [row["input_ids"].tolist() for row in data.train] == [stream[:4], stream[4:8]]
    assert data.head == HeadSpec("causal_lm", len(tokenizer))
    assert data.train_lengths is None
    assert data.metadata == {"block_size": 4, "skipped_rows": {"train": 0, "eval": 0}}
    batch = data.collate([data.train[0], data.train[1]])
    assert torch.equal(batch["labels"], batch["inputs"]["input_ids"])
    assert batch["inputs"]["attention_mask"].all()


def test_causal_lm_refuses_a_corpus_shorter_than_one_block(tmp_path: Path, tokenizer) -> None:
    task = causal_lm(tmp_path, "a good film\n", block_size=8)
    message = "causal-lm: the training rows hold fewer tokens than one block (block_size = 8)"
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        task.build_data(tokenizer, seed=0)


def test_causal_lm_loss_is_shifted_next_token_nll_and_perplexity_its_exp(tmp_path: Path) -> None:
    task = causal_lm(tmp_path, "a\n", block_size=3)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, 4, 2], [3, 0, -100]])
    log_probs = logits.log_softmax(-1)
    nll = [-log_probs[0, 0, 4], -log_probs[0, 1, 2], -log_probs[1, 0, 0]]
    batch = {"labels": labels, "inputs": {"attention_mask": (labels >= 0).long()}}
    assert task.loss(output(logits), batch).item() == pytest.approx(float(sum(nll) / 3))

    metrics = task.metrics()
    metrics.update(output(logits), batch)
    metrics.update(output(logits[:1]), {"labels": labels[:1]})
    expected = math.exp(float(sum(nll) + nll[0] + nll[1]) / 5)
    assert metrics.compute() == pytest.approx({"perplexity": expected})

    kd_logits, kd_mask = task.kd_logits(output(logits), batch)
    assert kd_logits is not None and kd_mask.tolist() == [[True] * 3, [True, True, False]]
