"""``task.loss_normalisation``: the classification loss divided as the paper's speech code did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cald_tasks.classification import SpeakerIdTask
from cald_tasks.intent import IntentClassificationTask
from cald_tasks.options import AudioClassificationOptions, IntentOptions
from transformers import Wav2Vec2FeatureExtractor

from cald_framework.contracts import CaldOutput
from cald_framework.errors import DataError
from cald_framework.validation import OptionsError, validate_options
from cald_framework.testing.audio import write_tone

ROWS = [
    ("alarm", "set", "wake me up at seven"),
    ("iot", "hue_lightoff", "lights off"),
    ("alarm", "query", "what alarms do i have set for tomorrow morning"),
]


def _intent_task(tmp_path: Path, **options: object) -> IntentClassificationTask:
    write_tone(tmp_path / "u.wav", 200, 0.02, 16_000)
    lines = ["audio,scenario,action,transcript", *(f"u.wav,{s},{a},{t}" for s, a, t in ROWS)]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return IntentClassificationTask(
        IntentOptions(
            dataset="csv",
            data_files=str(tmp_path / "manifest.csv"),
            eval_split=None,
            cache_dir=str(tmp_path / "cache"),
            **options,  # type: ignore[arg-type]
        )
    )


def _reference_loss(logits: torch.Tensor, labels: torch.Tensor, lengths: list[int]) -> float:
    """speech/models/model.py: the summed cross-entropy; every gradient is then divided by
    n_samples, the summed character length of the batch's transcripts."""
    return float(F.cross_entropy(logits, labels, reduction="sum") / sum(lengths))


def _batch_loss(task: IntentClassificationTask, tmp_path: Path) -> tuple[torch.Tensor, dict]:
    data = task.build_data(Wav2Vec2FeatureExtractor(), seed=0)
    batch = data.collate([data.train[i] for i in range(len(data.train))])
    logits = torch.randn(len(ROWS), len(data.metadata["label_names"]), generator=torch.Generator().manual_seed(0))
    output = CaldOutput(logits=logits, hidden_states=(), hidden_mask=torch.ones(len(ROWS), 1))
    return task.loss(output, batch), {"logits": logits, **batch}


def test_transcript_length_divides_the_summed_loss_by_the_summed_characters(tmp_path: Path) -> None:
    task = _intent_task(tmp_path, loss_normalisation="transcript_length", transcript_column="transcript")
    loss, batch = _batch_loss(task, tmp_path)
    lengths = [len(text) for *_, text in ROWS]
    assert batch["transcript_length"].tolist() == lengths
    assert float(loss) == pytest.approx(_reference_loss(batch["logits"], batch["labels"], lengths))


def test_no_normalisation_is_the_mean_over_rows(tmp_path: Path) -> None:
    loss, batch = _batch_loss(_intent_task(tmp_path), tmp_path)
    assert "transcript_length" not in batch
    assert float(loss) == pytest.approx(float(F.cross_entropy(batch["logits"], batch["labels"])))


def test_a_constant_divides_the_mean(tmp_path: Path) -> None:
    # VoxCeleb1 in the paper's code: every row's transcript is the placeholder "123"
    loss, batch = _batch_loss(_intent_task(tmp_path, loss_normalisation=3), tmp_path)
    assert float(loss) == pytest.approx(_reference_loss(batch["logits"], batch["labels"], [3] * len(ROWS)))


def test_a_row_without_transcript_is_a_bad_row(tmp_path: Path) -> None:
    write_tone(tmp_path / "u.wav", 200, 0.02, 16_000)
    (tmp_path / "manifest.csv").write_text("audio,scenario,action,transcript\nu.wav,a,b,\nu.wav,c,d,x\n")
    options = IntentOptions(
        dataset="csv", data_files=str(tmp_path / "manifest.csv"), eval_split=None,
        cache_dir=str(tmp_path / "cache"), loss_normalisation="transcript_length",
        transcript_column="transcript",
    )
    with pytest.raises(DataError, match=r"manifest.csv row 1: missing transcript in column 'transcript'"):
        IntentClassificationTask(options).build_data(Wav2Vec2FeatureExtractor(), seed=0)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"loss_normalisation": "transcript_length"}, "'transcript_length' needs transcript_column"),
        ({"transcript_column": "text"}, "transcript_column is read only with loss_normalisation"),
        ({"loss_normalisation": 0}, "must be 'none', 'transcript_length' or a number above 0, got 0"),
        ({"loss_normalisation": "length"}, "a number above 0, got 'length'"),
        ({"loss_normalisation": True}, "a number above 0, got True"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as raised:
        validate_options(AudioClassificationOptions, {"dataset": "org/data", **settings}, "task")
    assert "\n" not in str(raised.value)


def test_speaker_id_takes_the_option_too() -> None:
    options = AudioClassificationOptions(dataset="org/data", loss_normalisation=3)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    output = CaldOutput(logits=logits, hidden_states=(), hidden_mask=torch.ones(4, 1))
    loss = SpeakerIdTask(options).loss(output, {"labels": labels})
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, labels)) / 3)
