"""The exported student of a tiny run: its model card and a directory that loads alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from cald_testing.workspaces import build_review_workspace

from cald_framework import cli
from cald_framework.hf.card import base_model

CHANGES = {
    "experiment.name": "card",
    "teacher.finetune": {"epochs": 1, "lr": 1e-3},
    "teacher.num_waypoints": 2,
    "training.epochs": 1,
    "training.save_every": None,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("card")
    build_review_workspace(root, CHANGES)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(["run", "spec.toml"]) == 0
    return root / "run"


def front_matter_and_body(card: str) -> tuple[dict, str]:
    _, header, body = card.split("---\n", 2)
    return yaml.safe_load(header), body


def test_model_card_describes_the_run(run: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    metadata, body = front_matter_and_body((run / "student" / "README.md").read_text())
    assert metadata == {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": [
            "cald",
            "cald-framework",
            "distillation",
            "linear-complexity",
            "linformer",
            "text-classification",
        ],
    }  # the teacher is a local directory, so there is no Hub base model
    assert body.startswith("# card\n")
    assert "A linear-complexity student of `./tiny-bert` (bert family)" in body
    options = json.loads((run / "student" / "config.json").read_text())["mixer_options"]
    assert f"- mixer: `linformer`, options `{json.dumps(options, sort_keys=True)}`" in body
    assert options["k"] == 8
    assert "- guidance mode: `target`, student initialised from the target weights" in body
    assert "- task: `text-classification`, data: dataset `csv`, data_files `./reviews.csv`" in body
    teacher, student = results["teacher_metrics"], results["student_metrics"]
    initial = results["initial_student_metrics"]
    row = [f"{metrics['accuracy']:.4f}" for metrics in (teacher, initial, student)]
    assert f"| accuracy | {' | '.join(row)} |" in body.splitlines()
    assert f"```toml\n{(run / 'spec.toml').read_text()}```" in body
    versions = results["versions"]
    assert versions["transformers"] == transformers.__version__
    assert versions["torch"] == torch.__version__
    package = versions["cald_framework"]
    assert f"Versions: cald_framework {package}, torch {torch.__version__}, " in body


def test_the_run_exports_a_directory_that_loads_alone(run: Path) -> None:
    directory = run / "student"
    classify = transformers.pipeline("text-classification", model=str(directory))
    assert classify("the film was great")[0]["label"] in {"fresh", "rotten"}
    labels = transformers.AutoConfig.from_pretrained(directory).id2label
    assert labels == {0: "fresh", 1: "rotten"}


@pytest.mark.parametrize(
    ("source_model", "expected"),
    [
        ("EleutherAI/pythia-70m", "EleutherAI/pythia-70m"),
        ("./tiny-bert", None),
        ("/models/x", None),
        (None, None),
    ],
)
def test_only_hub_ids_are_base_models(source_model: str | None, expected: str | None) -> None:
    assert base_model(source_model) == expected
