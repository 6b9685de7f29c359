"""Generated assets (``[assets.NAME] generate = ...``), ``teacher.init = "random"`` and the
speech CPU spec that uses both, run from a clean directory with its one documented command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from cald_framework.assets import MARKER, AssetError, GeneratedAsset, fetch_asset
from cald_framework.cli import main
from cald_framework.data import generators
from cald_framework.data.generators import DataGenerator
from cald_framework.errors import DataError, SpecError
from cald_framework.run.prepare import RunContext
from cald_framework.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEECH_SPEC = REPO / "specs" / "cpu" / "speech-commands-bimamba2.toml"
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install -y espeak-ng sox)",
)


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lines: int = 2


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A generator ``count`` that writes ``lines`` lines and records each call."""
    calls: list[int] = []

    def make(out: Path, options: CountOptions) -> None:
        calls.append(options.lines)
        if options.lines < 0:
            raise DataError("cannot write a negative number of lines")
        (out / "data.txt").write_text("x\n" * options.lines)

    maker = DataGenerator("count", CountOptions, make, version="1", description="test")
    monkeypatch.setitem(generators.GENERATORS, "count", maker)
    return calls


def test_generated_asset_is_made_once_and_keyed_by_its_complete_options(counting, tmp_path):
    first = fetch_asset("data", GeneratedAsset(generate="count"), tmp_path)
    assert (first / "data.txt").read_text() == "x\nx\n"
    assert (first / MARKER).is_file()
    # the default spelled out is the same data set: a cache hit
    assert fetch_asset("data", GeneratedAsset(generate="count", options={"lines": 2}), tmp_path) == first
    assert counting == [2]
    other = fetch_asset("data", GeneratedAsset(generate="count", options={"lines": 3}), tmp_path)
    assert other != first and (other / "data.txt").read_text() == "x\n" * 3
    assert counting == [2, 3]


def test_a_failed_generation_leaves_no_entry_and_names_the_asset(counting, tmp_path):
    with pytest.raises(AssetError, match="^asset 'data': cannot write a negative number of lines$"):
        fetch_asset("data", GeneratedAsset(generate="count", options={"lines": -1}), tmp_path)
    assert not list((tmp_path / "generated").iterdir())


def test_an_entry_without_its_marker_is_made_again(counting, tmp_path):
    entry = fetch_asset("data", GeneratedAsset(generate="count"), tmp_path)
    (entry / MARKER).unlink()
    assert fetch_asset("data", GeneratedAsset(generate="count"), tmp_path) == entry
    assert counting == [2, 2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("assets.speech-commands.generate=nope", "unknown data generator 'nope'; known: speech-commands"),
        ("assets.speech-commands.options.per_intent=2", "options.per_intent: Input should be greater than or equal to 3"),
        ("assets.speech-commands.options.voices=2", "options.voices: Extra inputs are not permitted"),
    ],
)
def test_spec_errors_name_the_asset_and_its_option(override, message, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SpecError) as raised:
        load_spec(SPEECH_SPEC, [override])
    assert str(raised.value) == f"{SPEECH_SPEC}:23: assets.speech-commands: {message}"


def test_random_teacher_comes_from_the_config_and_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    base = ["teacher.init=random", f"experiment.output_dir={tmp_path}/{{name}}"]
    first = RunContext.from_spec(load_spec(SPEECH_SPEC, base)).source_model
    again = RunContext.from_spec(load_spec(SPEECH_SPEC, base)).source_model
    reseeded = RunContext.from_spec(load_spec(SPEECH_SPEC, [*base, "experiment.seed=1"])).source_model
    config = json.loads((REPO / "specs" / "cpu" / "tiny-wav2vec2" / "config.json").read_text())
    assert first.config.source_config["hidden_size"] == config["hidden_size"]
    assert first.num_layers == config["num_hidden_layers"]
    weights, same, other = (m.state_dict() for m in (first, again, reseeded))
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert not all(torch.equal(weights[k], other[k]) for k in weights)


def test_random_teacher_needs_a_config_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    (tmp_path / "empty").mkdir()
    shutil.copy(REPO / "specs/cpu/tiny-wav2vec2/preprocessor_config.json", tmp_path / "empty")
    spec = load_spec(SPEECH_SPEC, [f"teacher.model={tmp_path}/empty"])
    with pytest.raises(SpecError, match="needs teacher.model to be a directory with a config.json"):
        RunContext.from_spec(spec).source_model


@needs_tools
def test_speech_spec_runs_from_a_clean_directory_with_its_one_command(tmp_path, monkeypatch, capsys):
    """The documented command, with smaller data and training so the test stays short."""
    workdir = tmp_path / "checkout"
    shutil.copytree(REPO / "specs", workdir / "specs")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("CALD_CACHE", str(tmp_path / "cache"))
    smaller = [
        "assets.speech-commands.options={speakers = 2, intents = 2, per_intent = 3}",
        "teacher.finetune.epochs=1", "training.epochs=1", "evaluation.every=100",
        "teacher.num_waypoints=1",
    ]
    args = ["run", "specs/cpu/speech-commands-bimamba2.toml"]
    assert main([*args, *(item for o in smaller for item in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n"):])
    assert 0.0 <= summary["student_intent_accuracy"] <= 1.0
    made = list((tmp_path / "cache" / "assets" / "generated").iterdir())
    assert len(made) == 1 and (made[0] / "manifest.csv").read_text().count("\n") == 1 + 2 * 2 * 3
