"""The synthetic spoken-command data set: plan (pure Python) and generation (espeak-ng + sox)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from cald_framework.data.speech_commands import (
    ACCENTS,
    INTENTS,
    MANIFEST,
    SLOTS,
    SPLITS,
    VARIANTS,
    generate,
    make_phrasings,
    make_speakers,
    plan,
    split_sizes,
)
from cald_framework.cli import main
from cald_framework.errors import DataError

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install -y espeak-ng sox)",
)

COLUMNS = ["path", "speaker", "scenario", "action", "intent", "transcript", "split"]


def read_manifest(out: Path) -> list[dict[str, str]]:
    with (out / MANIFEST).open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def largest_pool(intent) -> int:
    """How many distinct sentences an intent's templates can make."""
    total = 0
    for template in intent.templates:
        count = 1
        for slot in re.findall(r"{(\w+)}", template):
            count *= len(SLOTS[slot])
        total += count
    return total


@pytest.mark.parametrize("intent", INTENTS, ids=lambda intent: intent.name)
def test_every_phrasing_is_a_plain_lowercase_transcript(intent):
    phrasings = make_phrasings(intent, largest_pool(intent), seed=0)
    assert len(set(phrasings)) == len(phrasings) == largest_pool(intent)
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", text) for text in phrasings)


def test_phrasings_take_templates_in_turn():
    intent = INTENTS[0]
    patterns = [re.sub(r"{\w+}", ".+", template) for template in intent.templates]
    first = make_phrasings(intent, len(intent.templates), seed=3)
    used = {next(i for i, p in enumerate(patterns) if re.fullmatch(p, text)) for text in first}
    assert used == set(range(len(intent.templates)))


def test_intent_names_are_scenario_action_and_unique():
    names = [intent.name for intent in INTENTS]
    assert len(set(names)) == len(names) == 16
    assert names[:3] == ["iot_lights_on", "iot_lights_off", "play_music"]


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(3, (1, 1, 1)), (4, (2, 1, 1)), (10, (6, 2, 2)), (20, (14, 3, 3))],
)
def test_split_sizes(count, sizes):
    assert tuple(split_sizes(count).values()) == sizes


def test_plan_splits_by_phrasing_and_covers_everyone_everywhere():
    speakers = make_speakers(3, seed=0)
    rows = plan(speakers, INTENTS[:4], per_intent=5, seed=0)
    assert len(rows) == 3 * 4 * 5
    by_split = {split: [row for row in rows if row.split == split] for split in SPLITS}
    texts = {split: {row.transcript for row in group} for split, group in by_split.items()}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    for group in by_split.values():
        assert {row.speaker for row in group} == {"spk00", "spk01", "spk02"}
        assert {row.intent for row in group} == {intent.name for intent in INTENTS[:4]}
    assert [row.path for row in rows] == sorted({row.path for row in rows})


def test_plan_depends_on_the_seed():
    speakers = make_speakers(2, seed=0)
    first = plan(speakers, INTENTS[:3], per_intent=4, seed=0)
    assert first == plan(speakers, INTENTS[:3], per_intent=4, seed=0)
    assert first != plan(speakers, INTENTS[:3], per_intent=4, seed=1)


def test_speakers_are_distinct_and_vary_accent_and_variant_first():
    speakers = make_speakers(60, seed=0)
    assert len({speaker.voice for speaker in speakers}) == 60
    first = [speaker.voice.split("+") for speaker in speakers[:6]]
    assert len({accent for accent, _ in first}) == len({variant for _, variant in first}) == 6
    assert speakers[0].voice == "en-us+m1"
    assert all(0 <= s.pitch <= 99 and 140 <= s.speed <= 185 for s in speakers)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"speakers": 0}, "--speakers must be between 1 and 60, got 0"),
        ({"intents": 17}, "--intents must be between 1 and 16, got 17"),
        ({"per_intent": 2}, "--per-intent must be at least 3 (one phrasing per split), got 2"),
        ({"per_intent": 25}, "--per-intent 25 is more than intent alarm_remove can phrase (24)"),
    ],
)
def test_bad_sizes_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        generate(tmp_path, **options)


def test_missing_programs_name_the_apt_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError) as caught:
        generate(tmp_path / "out", speakers=1, intents=1, per_intent=3)
    assert str(caught.value) == (
        "speech_commands needs espeak-ng and sox on PATH: apt-get install -y espeak-ng sox"
    )


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert main(["data", "speech-commands", "--out", str(tmp_path), "--intents", "17"]) == 2
    assert capsys.readouterr().err == "error: --intents: Input should be less than or equal to 16\n"


@needs_tools
def test_generate_writes_16k_wavs_and_a_deterministic_manifest(tmp_path):
    options = {"speakers": 2, "intents": 2, "per_intent": 3, "seed": 5}
    first, second = tmp_path / "a", tmp_path / "b"
    generate(first, **options, jobs=2)
    assert main(["data", "speech-commands", "--out", str(second), "--speakers", "2",
                 "--intents", "2", "--per-intent", "3", "--seed", "5"]) == 0
    rows = read_manifest(first)
    assert len(rows) == 2 * 2 * 3
    assert (first / MANIFEST).read_bytes() == (second / MANIFEST).read_bytes()
    wavs = sorted(str(p.relative_to(first)) for p in first.rglob("*.wav"))
    assert wavs == [row["path"] for row in rows]
    for row in rows:
        with wave.open(str(first / row["path"])) as audio:
            layout = (audio.getframerate(), audio.getnchannels(), audio.getsampwidth())
            assert layout == (16000, 1, 2)
            assert 0.5 < audio.getnframes() / 16000 < 5.0
        assert (first / row["path"]).read_bytes() == (second / row["path"]).read_bytes()
    assert {row["speaker"] for row in rows} == {"spk00", "spk01"}
    assert {row["intent"] for row in rows} == {"iot_lights_on", "iot_lights_off"}
    splits = {}
    for row in rows:
        splits.setdefault(row["split"], set()).add(row["transcript"])
    assert sorted(splits) == ["test", "train", "validation"]
    assert sum(len(texts) for texts in splits.values()) == len(set().union(*splits.values())) == 6


@needs_tools
def test_speakers_sound_different(tmp_path):
    generate(tmp_path, speakers=2, intents=1, per_intent=3, seed=0)
    rows = read_manifest(tmp_path)
    same_text = [row for row in rows if row["path"].endswith("_00.wav")]
    audio = [(tmp_path / row["path"]).read_bytes() for row in same_text]
    assert len(same_text) == 2 and audio[0] != audio[1]


def espeak_voices(kind: str, column: int) -> set[str]:
    listing = subprocess.run(
        ["espeak-ng", f"--voices={kind}"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[column] for line in listing.splitlines()[1:]}


@needs_tools
def test_every_voice_is_known_to_espeak():
    """espeak-ng falls back silently on an unknown voice, so check the names here."""
    assert set(ACCENTS) <= espeak_voices("en", 1)
    assert {f"!v/{variant}" for variant in VARIANTS} <= espeak_voices("variant", 4)
