"""The audio tasks (audio-classification, speaker-id, intent-classification, ctc-asr)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from cald_tasks.audio import read_audio, resample
from cald_tasks.classification import AudioClassificationTask, SpeakerIdTask
from cald_tasks.ctc import CharVocabulary, CtcAsrTask
from cald_tasks.intent import IntentClassificationTask
from cald_tasks.options import AudioClassificationOptions, CtcOptions, IntentOptions
from transformers import Wav2Vec2FeatureExtractor

from cald_framework.contracts import CaldOutput, HeadSpec
from cald_framework.errors import DataError
from cald_framework.testing.audio import tone, write_tone

RATE = 16_000


@pytest.fixture
def extractor() -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor()


def output(logits: torch.Tensor, mask: torch.Tensor | None = None) -> CaldOutput:
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool)
    return CaldOutput(logits=logits, hidden_states=(), hidden_mask=mask)


def write_manifest(folder: Path, header: str, rows: list[str]) -> str:
    (folder / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return str(folder / "manifest.csv")


# ------------------------------------------------------------------------ reading audio


def test_resampling_keeps_the_frequency_and_gives_the_right_length() -> None:
    wave = resample(tone(1000, 1.0, 8000), 8000, RATE)
    assert len(wave) == RATE
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(len(wave), 1 / RATE)[spectrum.argmax()] == pytest.approx(1000)


def test_resampling_removes_content_above_the_new_nyquist_frequency() -> None:
    # 7 kHz cannot exist at 8 kHz; without a low-pass it would fold down to 1 kHz
    wave = resample(tone(7000, 1.0, RATE), RATE, 8000)
    assert len(wave) == 8000
    assert np.abs(wave[200:-200]).max() < 0.005  # away from the edges the filter settles


def test_read_audio_mixes_channels_down_and_resolves_relative_paths(tmp_path: Path) -> None:
    stereo = np.stack([tone(440, 0.1, 8000), np.zeros(800, np.float32)], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    wave, rate = read_audio("s.wav", tmp_path)
    assert rate == 8000 and np.allclose(wave, stereo[:, 0] / 2)
    embedded = {"bytes": (tmp_path / "s.wav").read_bytes(), "path": "s.wav"}
    assert np.array_equal(read_audio(embedded, None)[0], wave)


# ------------------------------------------------------------------ audio classification


def test_audio_classification_from_a_folder_resamples_and_pads(tmp_path: Path, extractor) -> None:
    write_tone(tmp_path / "train" / "dog" / "1.wav", 300, 0.05, 8000)
    write_tone(tmp_path / "train" / "cat" / "2.wav", 600, 0.10, RATE)
    write_tone(tmp_path / "train" / "dog" / "3.wav", 300, 0.02, RATE)
    write_tone(tmp_path / "dev" / "cat" / "4.wav", 600, 0.03, RATE)
    task = AudioClassificationTask(
        AudioClassificationOptions(
            dataset="audiofolder",
            data_files={"train": str(tmp_path / "train"), "validation": str(tmp_path / "dev")},
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data = task.build_data(extractor, seed=0)
    assert data.head == HeadSpec("classification", 2)
    assert data.metadata["label_names"] == ["cat", "dog"]
    # sorted paths: cat/2.wav, dog/1.wav (8 kHz, resampled), dog/3.wav
    assert data.train_lengths == [1600, 800, 320]
    assert [int(row["labels"]) for row in data.train] == [0, 1, 1]
    assert len(data.eval) == 1

    batch = data.collate([data.train[1], data.train[2]])
    values = batch["inputs"]["input_values"]
    assert values.shape == (2, 800) and values.dtype == torch.float32
    assert batch["inputs"]["attention_mask"].sum(-1).tolist() == [800, 320]
    assert torch.all(values[1, 320:] == 0)
    # the extractor normalises each clip to zero mean and unit variance
    assert values[0].mean().item() == pytest.approx(0, abs=1e-4)
    assert values[0].std().item() == pytest.approx(1, abs=1e-2)
    assert batch["labels"].tolist() == [1, 1]


def test_speaker_id_reads_a_manifest_divided_by_a_split_column(tmp_path: Path, extractor) -> None:
    for name in ("a", "b", "c"):
        write_tone(tmp_path / "clips" / f"{name}.wav", 200, 0.02, RATE)
    manifest = write_manifest(
        tmp_path,
        "path,speaker,split",
        [
            "clips/a.wav,ann,train",
            "clips/b.wav,bob,train",
            "clips/c.wav,bob,validation",
        ],
    )
    task = SpeakerIdTask(
        AudioClassificationOptions(
            dataset="csv",
            data_files=manifest,
            audio_column="path",
            label_column="speaker",
            split_column="split",
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data = task.build_data(extractor, seed=0)
    assert data.metadata["label_names"] == ["ann", "bob"]
    assert (len(data.train), len(data.eval)) == (2, 1)
    metrics = task.metrics()
    metrics.update(output(torch.tensor([[1.0, 0.0], [1.0, 0.0]])), {"labels": torch.tensor([0, 1])})
    assert metrics.compute() == {"accuracy": 0.5}


def test_embedded_audio_of_a_datasets_audio_column_is_decoded_here(
    tmp_path: Path, extractor
) -> None:
    # hub-style parquet: an Audio feature holding the file bytes, which datasets itself could
    # only decode with torchcodec
    clips = [write_tone(tmp_path / f"{name}.wav", 300, 0.05, 8000) for name in ("a", "b")]
    audio = pa.array(
        [{"bytes": clip.read_bytes(), "path": clip.name} for clip in clips],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    features = {"audio": {"_type": "Audio"}, "label": {"dtype": "string", "_type": "Value"}}
    table = pa.table({"audio": audio, "label": ["x", "y"]}).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})}
    )
    pq.write_table(table, tmp_path / "clips.parquet")
    task = AudioClassificationTask(
        AudioClassificationOptions(
            dataset="parquet",
            data_files=str(tmp_path / "clips.parquet"),
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data = task.build_data(extractor, seed=0)
    assert data.train_lengths == [800, 800]  # 0.05 s recorded at 8 kHz, resampled to 16 kHz


def test_long_audio_is_cropped_or_rejected(tmp_path: Path, extractor) -> None:
    write_tone(tmp_path / "long.wav", 200, 0.5, RATE)
    write_tone(tmp_path / "short.wav", 200, 0.1, RATE)
    manifest = write_manifest(tmp_path, "audio,label", ["long.wav,x", "short.wav,y"])

    def build(on_too_long: str, on_bad_row: str = "error"):
        return AudioClassificationTask(
            AudioClassificationOptions(
                dataset="csv",
                data_files=manifest,
                eval_split=None,
                max_seconds=0.2,
                on_too_long=on_too_long,
                on_bad_row=on_bad_row,
                cache_dir=str(tmp_path / "cache"),
            )
        ).build_data(extractor, seed=0)

    assert build("crop").train_lengths == [3200, 1600]
    with pytest.raises(
        DataError, match=rf"^{manifest} row 1: audio is 0\.50 s long, over max_seconds = 0\.2$"
    ):
        build("reject")
    skipped = build("reject", on_bad_row="skip")
    assert skipped.train_lengths == [1600]
    assert skipped.metadata["skipped_rows"] == {"train": 1, "eval": 0}


# ---------------------------------------------------------------------------------- intent


@pytest.mark.parametrize("layout", ["two columns", "intent column"])
def test_intent_labels_are_joint_scenario_action(tmp_path: Path, extractor, layout: str) -> None:
    write_tone(tmp_path / "u.wav", 200, 0.02, RATE)
    intents = ["iot_hue_lightoff", "alarm_set", "alarm_query", "iot_hue_lightoff"]
    if layout == "two columns":
        rows = [f"u.wav,{i.split('_', 1)[0]},{i.split('_', 1)[1]}" for i in intents]
        manifest, columns = write_manifest(tmp_path, "audio,scenario,action", rows), {}
    else:
        manifest = write_manifest(tmp_path, "audio,slurp", [f"u.wav,{i}" for i in intents])
        columns = {"intent_column": "slurp"}
    task = IntentClassificationTask(
        IntentOptions(
            dataset="csv",
            data_files=manifest,
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
            **columns,
        )
    )
    data = task.build_data(extractor, seed=0)
    assert data.metadata["label_names"] == ["alarm_query", "alarm_set", "iot_hue_lightoff"]
    assert [int(label) for label in data.train["labels"]] == [2, 1, 0, 2]


def test_intent_metrics_derive_scenario_and_action_from_the_joint_prediction(
    tmp_path: Path, extractor
) -> None:
    write_tone(tmp_path / "u.wav", 200, 0.02, RATE)
    names = ["alarm_query", "alarm_set", "iot_hue_lightoff", "iot_query"]
    rows = [f"u.wav,{n.split('_', 1)[0]},{n.split('_', 1)[1]}" for n in names]
    task = IntentClassificationTask(
        IntentOptions(
            dataset="csv",
            data_files=write_manifest(tmp_path, "audio,scenario,action", rows),
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert task.build_data(extractor, seed=0).metadata == {
        "label_names": names,
        "intent_separator": "_",
        "skipped_rows": {"train": 0, "eval": 0},
    }
    predicted = torch.tensor([0, 0, 3, 2])
    metrics = task.metrics()
    metrics.update(
        output(torch.nn.functional.one_hot(predicted, 4).double()),
        {"labels": torch.tensor([0, 1, 0, 3])},
    )
    # joint: 1/4 right; scenarios alarm alarm iot iot vs alarm alarm alarm iot: 3/4;
    # actions query query query hue_lightoff vs query set query query: 2/4
    assert metrics.compute() == {
        "intent_accuracy": 0.25,
        "scenario_accuracy": 0.75,
        "action_accuracy": 0.5,
    }
    assert task.primary_metric == "intent_accuracy"


# ------------------------------------------------------------------------------------- CTC


def ctc_task(tmp_path: Path, transcripts: list[str], **options) -> CtcAsrTask:
    for index in range(len(transcripts)):
        write_tone(tmp_path / f"{index}.wav", 200, 0.02 * (index + 1), RATE)
    rows = [f"{index}.wav,{text}" for index, text in enumerate(transcripts)]
    manifest = write_manifest(tmp_path, "audio,transcript", rows)
    return CtcAsrTask(
        CtcOptions(
            dataset="csv",
            data_files=manifest,
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
            **options,
        )
    )


def test_ctc_vocabulary_from_transcripts_labels_and_collate(tmp_path: Path, extractor) -> None:
    task = ctc_task(tmp_path, ["the cat", "A  tea "], text_case="lower")
    data = task.build_data(extractor, seed=0)
    vocab = ["<blank>", "<unk>", "|", "a", "c", "e", "h", "t"]
    assert data.metadata == {
        "vocab": vocab,
        "blank_id": 0,
        "word_delimiter": "|",
        "skipped_rows": {"train": 0, "eval": 0},
    }
    assert data.head == HeadSpec("token_classification", len(vocab))
    batch = data.collate([data.train[0], data.train[1]])
    ids = {token: index for index, token in enumerate(vocab)}
    assert batch["labels"].tolist() == [
        [ids[c] for c in "the|cat"],
        [ids[c] for c in "a|tea"] + [-100, -100],
    ]
    assert batch["text"] == ["the cat", "a tea"]
    assert batch["inputs"]["input_values"].shape == (2, 640)


def test_ctc_vocabulary_from_a_hugging_face_vocab_json(tmp_path: Path, extractor) -> None:
    vocab = {"<pad>": 0, "<s>": 1, "|": 2, "A": 3, "B": 4}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    task = ctc_task(
        tmp_path, ["AB A", "B C"], vocab=str(tmp_path / "vocab.json"), on_bad_row="skip"
    )
    data = task.build_data(extractor, seed=0)
    assert data.metadata["vocab"] == ["<pad>", "<s>", "|", "A", "B"]
    assert data.metadata["skipped_rows"] == {"train": 1, "eval": 0}
    assert data.collate([data.train[0]])["labels"].tolist() == [[3, 4, 2, 3]]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("vocab.txt", "<pad>\n|\na\n\nb\n"),
        ("vocab.json", '["<pad>", "|", "a", "b"]'),
        ("vocab.json", '{"b": 3, "<pad>": 0, "a": 2, "|": 1}'),
    ],
)
def test_vocabulary_files(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    assert CharVocabulary.from_spec(str(tmp_path / name)).tokens == ("<pad>", "|", "a", "b")


def test_vocabulary_json_ids_must_be_dense(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text('{"<pad>": 0, "|": 2}')
    with pytest.raises(DataError, match=r"vocab\.json: the ids must be 0\.\.1$"):
        CharVocabulary.from_spec(str(tmp_path / "vocab.json"))


def test_a_character_outside_a_vocabulary_without_unk_is_a_bad_row(
    tmp_path: Path, extractor
) -> None:
    task = ctc_task(tmp_path, ["ab", "abc"], vocab=["_", "|", "a", "b"])
    with pytest.raises(
        DataError, match=r"manifest\.csv row 2: character 'c' is not in the CTC vocabulary$"
    ):
        task.build_data(extractor, seed=0)


def test_a_vocabulary_without_word_delimiter_is_refused() -> None:
    with pytest.raises(
        DataError, match=r"CTC vocabulary needs the word delimiter '\|' after the blank"
    ):
        CharVocabulary(("<blank>", "a", "b"))


def _brute_force_ctc(log_probs: torch.Tensor, target: list[int]) -> float:
    """-log of the summed probability of every frame path that collapses to ``target``."""
    total = 0.0
    frames, classes = log_probs.shape
    for path in itertools.product(range(classes), repeat=frames):
        collapsed = [c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c)]
        if collapsed == target:
            total += math.exp(sum(log_probs[t, c].item() for t, c in enumerate(path)))
    return -math.log(total)


def test_ctc_loss_matches_a_brute_force_sum_over_alignments(tmp_path: Path, extractor) -> None:
    task = ctc_task(tmp_path, ["a b", "b"])
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    labels = torch.tensor([[1, 2, 1], [2, -100, -100]])
    log_probs = logits.log_softmax(-1)
    expected = (
        _brute_force_ctc(log_probs[0], [1, 2, 1]) / 3 + _brute_force_ctc(log_probs[1, :3], [2]) / 1
    ) / 2
    loss = task.loss(output(logits, mask), {"labels": labels})
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    kd_logits, kd_mask = task.kd_logits(output(logits, mask), {"labels": labels})
    assert torch.equal(kd_mask, mask)


def test_ctc_greedy_decoding_and_error_rates(tmp_path: Path, extractor) -> None:
    task = ctc_task(tmp_path, ["the cat sat", "bat"])
    task.build_data(extractor, seed=0)
    vocab = task.vocabulary
    assert vocab is not None
    ids = {token: index for index, token in enumerate(vocab.tokens)}
    # repeats collapse, blanks separate true repeats, "|" is a space, <unk> decodes to nothing
    frames = [ids[c] for c in "tthhe||bb"] + [0] + [ids[c] for c in "aatt"] + [ids["<unk>"], 0]
    assert vocab.decode(frames) == "the bat"
    frames = [ids[c] for c in "the|bat|sat"]
    logits = torch.nn.functional.one_hot(torch.tensor([frames, frames]), len(vocab.tokens)).double()
    mask = torch.ones(2, len(frames), dtype=torch.bool)
    mask[1, 3:] = False  # the second row decodes to "the"
    metrics = task.metrics()
    metrics.update(output(logits, mask), {"text": ["the cat sat", "the"]})
    assert metrics.compute() == pytest.approx({"wer": 1 / 4, "cer": 1 / 14})
