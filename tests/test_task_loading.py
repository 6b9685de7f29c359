"""Loading task data: file formats, splits, bad rows, option errors, caching, registration."""

from __future__ import annotations

import bz2
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cald_tasks import plugin
from cald_tasks.classification import AudioClassificationTask, TextClassificationTask
from cald_tasks.options import AudioClassificationOptions, TextClassificationOptions
from cald_tasks.text import TextInputs
from pydantic import ValidationError
from transformers import Wav2Vec2FeatureExtractor

from cald_framework.errors import CaldError, DataError
from cald_framework.testing.audio import write_tone
from cald_framework.testing.text import word_level_tokenizer

TOKENIZER = word_level_tokenizer(["a b c d e f g h"])


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def text_task(tmp_path: Path, **options) -> TextClassificationTask:
    options.setdefault("dataset", "csv")
    return TextClassificationTask(
        TextClassificationOptions(cache_dir=str(tmp_path / "cache"), **options)
    )


def build(tmp_path: Path, **options):
    return text_task(tmp_path, **options).build_data(TOKENIZER, seed=0)


# ------------------------------------------------------------------------------ formats


def test_compressed_csv_jsonl_and_parquet_give_the_same_rows(tmp_path: Path) -> None:
    csv = "text,label\na b,x\nc,y\n"
    (tmp_path / "t.csv.bz2").write_bytes(bz2.compress(csv.encode()))
    jsonl = write(
        tmp_path / "t.jsonl", '{"text": "a b", "label": "x"}\n{"text": "c", "label": "y"}\n'
    )
    import pandas

    pandas.DataFrame({"text": ["a b", "c"], "label": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    results = [
        build(tmp_path, dataset=reader, data_files=str(path), eval_split=None)
        for reader, path in [
            ("csv", tmp_path / "t.csv.bz2"),
            ("json", jsonl),
            ("parquet", tmp_path / "t.parquet"),
        ]
    ]
    rows = [
        [(row["input_ids"].tolist(), int(row["labels"])) for row in data.train] for data in results
    ]
    assert rows[0] == rows[1] == rows[2] == [([3, 4], 0), ([5], 1)]


def test_several_files_per_split_are_concatenated(tmp_path: Path) -> None:
    first = write(tmp_path / "1.csv", "text,label\na,x\n")
    second = write(tmp_path / "2.csv", "text,label\nb,y\nc,x\n")
    data = build(tmp_path, data_files={"train": [first, second], "validation": second})
    assert (len(data.train), len(data.eval)) == (3, 2)


def test_eval_from_train_is_a_seeded_partition(tmp_path: Path) -> None:
    lines = "".join(f"{'abcdefgh'[i % 8]},{'xy'[i % 2]}\n" for i in range(20))
    path = write(tmp_path / "t.csv", "text,label\n" + lines)

    def split(seed: int) -> tuple[list[int], list[int]]:
        data = text_task(tmp_path, data_files=path, eval_from_train=0.25).build_data(
            TOKENIZER, seed
        )
        return [int(r["input_ids"][0]) for r in data.train], [
            int(r["input_ids"][0]) for r in data.eval
        ]

    train, evaluation = split(0)
    assert (len(train), len(evaluation)) == (15, 5)
    assert split(0) == (train, evaluation)
    assert split(1) != (train, evaluation)


def test_max_samples_keep_the_first_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    data = build(
        tmp_path,
        data_files={"train": path, "validation": path},
        max_train_samples=3,
        max_eval_samples=1,
    )
    assert (len(data.train), len(data.eval)) == (3, 1)


def test_split_column_divides_one_table(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label,part\na,x,train\nb,y,dev\nc,y,train\n")
    data = build(tmp_path, data_files=path, split_column="part", eval_split="dev")
    assert (len(data.train), len(data.eval)) == (2, 1)
    with pytest.raises(
        DataError, match=re.escape(f"{path}: no rows with part = 'test'; it has: dev, train")
    ):
        build(tmp_path, data_files=path, split_column="part", eval_split="test")


# ------------------------------------------------------------------------------ bad rows


@pytest.fixture
def messy(tmp_path: Path) -> tuple[str, str]:
    train = write(tmp_path / "train.csv", "text,label\na,x\n,y\nb,\nc,y\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,z\ne,x\n")
    return train, dev


def test_the_first_bad_row_stops_the_build_naming_file_and_row(tmp_path: Path, messy) -> None:
    train, dev = messy
    with pytest.raises(DataError, match=f"^{re.escape(train)} row 2: empty text in column 'text'$"):
        build(tmp_path, data_files={"train": train, "validation": dev})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\na,x\nb,\n", "row 2: missing label in column 'label'"),
        ("text,label\na,x\nb,z\n", "row 2: unknown label in column 'label': 'z' (known: x, y)"),
    ],
)
def test_label_problems(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "t.csv", content)
    with pytest.raises(DataError, match=f"^{re.escape(path)} {re.escape(message)}$"):
        build(tmp_path, data_files=path, eval_split=None, label_names=["x", "y"])


def test_skip_mode_drops_and_counts_bad_rows(tmp_path: Path, messy) -> None:
    train, dev = messy
    data = build(tmp_path, data_files={"train": train, "validation": dev}, on_bad_row="skip")
    assert data.metadata["skipped_rows"] == {"train": 2, "eval": 1}
    assert data.metadata["label_names"] == ["x", "y"]
    assert (len(data.train), len(data.eval)) == (2, 1)


def test_row_numbers_count_within_each_file(tmp_path: Path) -> None:
    first = write(tmp_path / "1.csv", "text,label\na,x\nb,y\n")
    second = write(tmp_path / "2.csv", "text,label\nc,x\n ,y\n")
    with pytest.raises(DataError, match=f"^{re.escape(second)} row 2: empty text"):
        build(tmp_path, data_files=[first, second], eval_from_train=0.5, label_names=["x", "y"])


def test_unusable_audio_files_are_bad_rows(tmp_path: Path) -> None:
    write_tone(tmp_path / "ok.wav", 200, 0.02, 16_000)
    write(tmp_path / "broken.wav", "not audio")
    manifest = write(
        tmp_path / "m.csv", "audio,label\nok.wav,x\nmissing.wav,y\nbroken.wav,y\nok.wav,y\n"
    )

    def build_audio(on_bad_row: str):
        return AudioClassificationTask(
            AudioClassificationOptions(
                dataset="csv",
                data_files=manifest,
                eval_split=None,
                on_bad_row=on_bad_row,
                cache_dir=str(tmp_path / "cache"),
            )
        ).build_data(Wav2Vec2FeatureExtractor(), seed=0)

    missing = tmp_path / "missing.wav"
    with pytest.raises(
        DataError,
        match=re.escape(f"{manifest} row 2: cannot read audio file '{missing}': no such file"),
    ):
        build_audio("error")
    assert build_audio("skip").metadata["skipped_rows"] == {"train": 2, "eval": 0}
    (tmp_path / "missing.wav").write_bytes((tmp_path / "ok.wav").read_bytes())
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{manifest} row 3: cannot read audio file '{tmp_path / 'broken.wav'}': "
            "Format not recognised."
        ),
    ):
        build_audio("error")


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\n,x\n,y\n")
    with pytest.raises(
        DataError, match=f"^{re.escape(path)}: no usable training rows \\(2 skipped\\)$"
    ):
        build(tmp_path, data_files=path, eval_split=None, on_bad_row="skip", label_names=["x", "y"])


# ------------------------------------------------------------------------ loading errors


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "sentence,label\na,x\n")
    with pytest.raises(
        DataError, match=f"^{re.escape(path)}: no column 'text'; the columns are: sentence, label$"
    ):
        build(tmp_path, data_files=path, eval_split=None)


def test_missing_split_says_how_to_fix_it(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\na,x\n")
    with pytest.raises(
        DataError,
        match=re.escape(
            "data_files has no split 'validation'; it has: train "
            "(set eval_split = the split to use, or eval_from_train)"
        ),
    ):
        build(tmp_path, data_files=path)


def test_a_single_label_cannot_train_a_classifier(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\na,x\nb,x\n")
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{path}: the training rows have 1 distinct label in column 'label' (x); "
            "a classifier needs two"
        ),
    ):
        build(tmp_path, data_files=path, eval_split=None)


def test_the_wrong_preprocessor_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\na,x\n")
    with pytest.raises(
        DataError,
        match="^text-classification needs a tokenizer; the source gave Wav2Vec2FeatureExtractor$",
    ):
        text_task(tmp_path, data_files=path).build_data(Wav2Vec2FeatureExtractor(), seed=0)


def test_metrics_need_the_labels_from_build_data(tmp_path: Path) -> None:
    task = text_task(tmp_path, data_files=write(tmp_path / "t.csv", "text,label\n"))
    with pytest.raises(CaldError, match="text-classification: build_data must run before metrics"):
        task.metrics()


BASE = {"dataset": "csv", "data_files": __file__}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "csv"}, "dataset = 'csv' reads local files: set data_files"),
        ({"dataset": "csv", "data_files": "nope.csv"}, "no such file or directory: nope.csv"),
        (
            {**BASE, "eval_split": "dev", "eval_from_train": 0.1},
            "set either eval_split or eval_from_train",
        ),
        ({**BASE, "eval_from_train": 1.5}, "less than 1"),
        (
            {**BASE, "split_column": "s", "data_files": {"train": __file__}},
            "split_column divides one table",
        ),
        ({**BASE, "label_names": ["a", "a"]}, "label_names has duplicates"),
        ({**BASE, "txt_column": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_option_errors(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TextClassificationOptions(**options)


# ------------------------------------------------------------------------------- caching


def test_a_second_build_reads_the_cache_and_a_new_tokenizer_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "t.csv", "text,label\na b,x\nc,y\n")
    first = build(tmp_path, data_files=path, eval_split=None)

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(TextInputs, "encode", fail)
    second = build(tmp_path, data_files=path, eval_split=None)
    assert second.train.cache_files == first.train.cache_files
    assert second.train._fingerprint == first.train._fingerprint
    other = word_level_tokenizer(["c b a"])
    with pytest.raises(AssertionError, match="encoded again"):
        text_task(tmp_path, data_files=path, eval_split=None).build_data(other, seed=0)


# --------------------------------------------------------------------------- registration


def test_the_plugin_registers_every_built_in_task() -> None:
    registered = []
    plugin.cald_register_tasks(register=registered.append)
    assert {
        (p.name, p.modality, p.build.primary_metric, p.build.higher_is_better) for p in registered
    } == {
        ("text-classification", "text", "accuracy", True),
        ("audio-classification", "audio", "accuracy", True),
        ("speaker-id", "audio", "accuracy", True),
        ("intent-classification", "audio", "intent_accuracy", True),
        ("ctc-asr", "audio", "wer", False),
        ("causal-lm", "text", "perplexity", False),
    }
    assert all(p.build.modality == p.modality for p in registered)


def test_text_only_installs_load_the_plugin_and_audio_tasks_say_what_is_missing() -> None:
    script = """
import sys
sys.modules["soundfile"] = None  # as if the speech extra were not installed
sys.modules["scipy"] = None
from cald_tasks import plugin
from cald_tasks.audio import AudioInputs
registered = []
plugin.cald_register_tasks(register=registered.append)
print(len(registered))
AudioInputs(None, "audio", None, "crop")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout == "6\n"
    assert result.stderr.strip().splitlines()[-1] == (
        "cald_framework.errors.CaldError: audio tasks need the soundfile package: "
        "pip install 'cald-framework[speech]'"
    )
