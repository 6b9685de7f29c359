"""A synthetic spoken-command data set, made offline with espeak-ng and sox.

No speech corpus can be downloaded here, so speech tasks (intent classification, speaker
identification, CTC recognition) train on commands that espeak-ng speaks. Speakers are espeak
voice/variant pairs with their own pitch and speed; intents are SLURP-style scenario/action
pairs, each with several phrasings built from templates and slot words.

The split is by phrasing: every transcript belongs to exactly one of train/validation/test, and
every speaker and every intent appears in each split (closed-set speaker identification needs
that). Test transcripts are sentences the model never heard, though their templates may be.

Everything is derived from ``--seed``: the same seed gives the same manifest, and, with the same
espeak-ng and sox versions, byte-identical audio (sox runs with ``-R`` and no dither).

    python -m cald_framework data speech-commands --out DIR
        [--speakers 6] [--intents 12] [--per-intent 4] [--seed 0]

or, in a spec, an asset ``{generate = "speech-commands", options = {...}}`` (see
:mod:`cald_framework.data.generators`).
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from string import Formatter

from tqdm.auto import tqdm

from ..errors import DataError

SAMPLE_RATE = 16_000
MANIFEST = "manifest.csv"
SPLITS = ("train", "validation", "test")
#: share of each intent's phrasings held out for validation and for test (each at least one)
EVAL_SHARE = 0.15
APT_PACKAGES = ("espeak-ng", "sox")

SLOTS: dict[str, tuple[str, ...]] = {
    "room": ("kitchen", "bedroom", "living room", "bathroom", "office", "hallway", "garage"),
    "genre": ("jazz", "rock", "classical", "pop", "country", "blues", "reggae", "hip hop"),
    "day": ("today", "tomorrow", "tonight", "this weekend", "on monday", "on friday"),
    "city": ("london", "paris", "tokyo", "new york", "berlin", "sydney"),
    "time": ("seven a m", "six thirty", "half past eight", "noon", "nine p m", "quarter to seven"),
    "topic": ("sports", "business", "science", "world", "technology", "health"),
    "dish": ("pancakes", "lasagna", "fried rice", "tomato soup", "banana bread", "chicken curry"),
    "place": ("the airport", "the station", "the city centre", "the hospital", "the museum"),
    "person": ("anna", "david", "maria", "john", "sarah", "peter"),
}


@dataclass(frozen=True)
class Intent:
    scenario: str
    action: str
    templates: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.scenario}_{self.action}"


#: in default order: ``--intents N`` takes the first N
INTENTS: tuple[Intent, ...] = (
    Intent("iot", "lights_on", (
        "turn on the lights in the {room}", "switch the {room} lights on",
        "lights on in the {room} please", "can you turn the {room} light on",
        "make the {room} bright",
    )),
    Intent("iot", "lights_off", (
        "turn off the lights in the {room}", "switch the {room} lights off",
        "lights off in the {room} please", "kill the lights in the {room}", "make the {room} dark",
    )),
    Intent("play", "music", (
        "play some {genre}", "put on some {genre} music", "i want to hear {genre}",
        "start playing {genre} please", "play {genre} in the {room}",
    )),
    Intent("weather", "query", (
        "what is the weather like {day}", "will it rain {day}", "do i need an umbrella {day}",
        "how cold will it be {day}", "what is the weather in {city} {day}",
    )),
    Intent("alarm", "set", (
        "set an alarm for {time}", "wake me up at {time}", "i need an alarm at {time}",
        "please set my alarm to {time} {day}",
    )),
    Intent("alarm", "remove", (
        "cancel my alarm for {time}", "remove the alarm at {time}", "delete the {time} alarm",
        "turn off my alarm for {day}",
    )),
    Intent("calendar", "set", (
        "add a meeting with {person} {day}", "remind me to call {person} {day}",
        "schedule lunch with {person} {day}", "put a call with {person} in my calendar",
    )),
    Intent("calendar", "query", (
        "what is on my calendar {day}", "do i have any meetings {day}",
        "when am i meeting {person}", "am i free {day}", "what meetings do i have with {person}",
    )),
    Intent("news", "query", (
        "what is the latest {topic} news", "tell me the {topic} headlines",
        "any news about {topic} {day}", "read me the {topic} news",
    )),
    Intent("audio", "volume_up", (
        "turn the volume up", "make it louder", "increase the volume in the {room}",
        "louder please", "raise the sound a little", "turn up the music in the {room}",
        "turn it up in the {room}",
    )),
    Intent("transport", "taxi", (
        "book a taxi to {place}", "call me a cab to {place}", "i need a ride to {place} at {time}",
        "get me a taxi to {place}",
    )),
    Intent("cooking", "recipe", (
        "how do i make {dish}", "give me a recipe for {dish}", "what do i need to cook {dish}",
        "find a {dish} recipe",
    )),
    Intent("iot", "lights_dim", (
        "dim the lights in the {room}", "turn the {room} lights down a bit",
        "make the {room} lights softer", "lower the brightness in the {room}",
    )),
    Intent("iot", "cleaning", (
        "start the vacuum in the {room}", "clean the {room}", "turn on the robot vacuum",
        "vacuum the {room} please",
    )),
    Intent("datetime", "query", (
        "what time is it", "what time is it in {city}", "what day is it {day}",
        "tell me the time in {city}", "what is the date {day}",
    )),
    Intent("email", "query", (
        "do i have new emails", "check my inbox", "any emails from {person}",
        "read my latest email from {person}", "show me the emails from {person} {day}",
    )),
)

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
VARIANTS = ("m1", "f2", "m3", "f4", "m7", "f1", "m2", "f3", "m4", "f5")


@dataclass(frozen=True)
class Speaker:
    name: str
    #: espeak-ng voice, ``accent+variant``
    voice: str
    #: espeak-ng pitch adjustment (0-99) and speed (words per minute)
    pitch: int
    speed: int


@dataclass(frozen=True)
class Utterance:
    """One row of the manifest (the field order is the column order)."""

    path: str
    speaker: str
    scenario: str
    action: str
    intent: str
    transcript: str
    split: str


COLUMNS = tuple(f.name for f in fields(Utterance))


def make_speakers(count: int, seed: int) -> list[Speaker]:
    """``count`` distinct voices, spread over accents and variants before any repeats.

    The pairs are taken diagonal by diagonal from the accent x variant grid, so the first
    speakers differ in both accent and variant.
    """
    grid = sorted(
        itertools.product(range(len(ACCENTS)), range(len(VARIANTS))),
        key=lambda pair: ((pair[1] - pair[0]) % len(VARIANTS), pair[0]),
    )
    if not 1 <= count <= len(grid):
        raise DataError(f"--speakers must be between 1 and {len(grid)}, got {count}")
    speakers = []
    for index, (accent, variant) in enumerate(grid[:count]):
        rng = random.Random(f"{seed}/speaker/{index}")
        speakers.append(Speaker(
            name=f"spk{index:02d}",
            voice=f"{ACCENTS[accent]}+{VARIANTS[variant]}",
            pitch=rng.randint(30, 70),
            speed=rng.randint(140, 185),
        ))
    return speakers


def _fillings(template: str) -> list[str]:
    """Every sentence a template makes with the slot words, in a fixed order."""
    slots = [name for _, name, _, _ in Formatter().parse(template) if name]
    return [
        template.format(**dict(zip(slots, words)))
        for words in itertools.product(*(SLOTS[slot] for slot in slots))
    ]


def make_phrasings(intent: Intent, count: int, seed: int) -> list[str]:
    """``count`` distinct sentences for ``intent``, taking templates in turn for variety."""
    rng = random.Random(f"{seed}/phrasings/{intent.name}")
    pools = []
    for template in intent.templates:
        sentences = _fillings(template)
        rng.shuffle(sentences)
        pools.append(sentences)
    rng.shuffle(pools)
    mixed = [s for group in itertools.zip_longest(*pools) for s in group if s is not None]
    if count > len(mixed):
        raise DataError(
            f"--per-intent {count} is more than intent {intent.name} can phrase ({len(mixed)})"
        )
    return mixed[:count]


def split_sizes(count: int) -> dict[str, int]:
    """How many of an intent's ``count`` phrasings go to each split."""
    if count < 3:
        raise DataError(f"--per-intent must be at least 3 (one phrasing per split), got {count}")
    held_out = max(1, round(count * EVAL_SHARE))
    return {"train": count - 2 * held_out, "validation": held_out, "test": held_out}


def plan(
    speakers: Sequence[Speaker], intents: Sequence[Intent], per_intent: int, seed: int
) -> list[Utterance]:
    """Every utterance of the data set, sorted by path; each speaker says every phrasing."""
    sizes = split_sizes(per_intent)
    labels = [split for split in SPLITS for _ in range(sizes[split])]
    rows = []
    for intent in intents:
        phrasings = make_phrasings(intent, per_intent, seed)
        for index, (transcript, split) in enumerate(zip(phrasings, labels)):
            rows.extend(
                Utterance(
                    path=f"audio/{speaker.name}/{intent.name}_{index:02d}.wav",
                    speaker=speaker.name,
                    scenario=intent.scenario,
                    action=intent.action,
                    intent=intent.name,
                    transcript=transcript,
                    split=split,
                )
                for speaker in speakers
            )
    return sorted(rows, key=lambda row: row.path)


def require_tools() -> None:
    """Fail early, in one line, when a program the generator runs is missing."""
    missing = [tool for tool in APT_PACKAGES if shutil.which(tool) is None]
    if missing:
        raise DataError(
            f"speech_commands needs {' and '.join(missing)} on PATH: "
            f"apt-get install -y {' '.join(APT_PACKAGES)}"
        )


def _speak(row: Utterance, speaker: Speaker, out: Path, seed: int) -> None:
    """Speak one utterance, with a small per-utterance wobble of pitch and speed."""
    rng = random.Random(f"{seed}/wobble/{row.path}")
    pitch = min(99, max(0, speaker.pitch + rng.randint(-4, 4)))
    speed = speaker.speed + rng.randint(-8, 8)
    target = out / row.path
    target.parent.mkdir(parents=True, exist_ok=True)
    espeak = ["espeak-ng", "-v", speaker.voice, "-p", str(pitch), "-s", str(speed), "--stdout"]
    spoken = subprocess.run([*espeak, row.transcript], capture_output=True, check=False)
    if spoken.returncode != 0 or not spoken.stdout:
        raise DataError(f"espeak-ng failed on {row.path}: {spoken.stderr.decode().strip()}")
    sox = ["sox", "-R", "-D", "-V1", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1"]
    converted = subprocess.run(
        [*sox, "-b", "16", "-e", "signed-integer", str(target)],
        input=spoken.stdout, capture_output=True, check=False,
    )
    if converted.returncode != 0:
        raise DataError(f"sox failed on {row.path}: {converted.stderr.decode().strip()}")


def write_manifest(rows: Sequence[Utterance], out: Path) -> Path:
    path = out / MANIFEST
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    return path


def generate(
    out: Path,
    *,
    speakers: int = 6,
    intents: int = 12,
    per_intent: int = 4,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = False,
) -> Path:
    """Write the WAV files and ``manifest.csv`` under ``out``; returns the manifest path.

    ``jobs`` parallel espeak-ng calls (default: one per CPU); ``progress`` shows a bar.
    """
    if not 1 <= intents <= len(INTENTS):
        raise DataError(f"--intents must be between 1 and {len(INTENTS)}, got {intents}")
    voices = make_speakers(speakers, seed)
    rows = plan(voices, INTENTS[:intents], per_intent, seed)
    require_tools()
    by_name = {speaker.name: speaker for speaker in voices}
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, jobs if jobs is not None else os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        spoken = pool.map(lambda row: _speak(row, by_name[row.speaker], out, seed), rows)
        bar = tqdm(spoken, total=len(rows), desc="speech-commands", unit="clip", disable=not progress)
        for _ in bar:
            pass
    return write_manifest(rows, out)
