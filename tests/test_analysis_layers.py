"""``analyze layers``: a layer made hard to convert ranks first, and its keep_attention line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import MODEL_DIR, build_review_workspace
from transformers import BertModel

from cald_framework import cli


def _workspace(root: Path, hard: int) -> Path:
    """The review workspace whose BERT attends sharply in layer ``hard`` and uniformly elsewhere.

    Uniform attention (zero queries and keys) is a mean over positions, which a Linformer
    learns at once; sharp attention picks single positions, which its few projections cannot.
    """
    build_review_workspace(root)
    model = BertModel.from_pretrained(root / MODEL_DIR)
    with torch.no_grad():
        for index, layer in enumerate(model.encoder.layer):
            attention = layer.attention.self
            for projection in (attention.query, attention.key):
                projection.weight.mul_(20.0 if index == hard else 0.0)
    model.save_pretrained(root / MODEL_DIR)
    return root


@pytest.mark.parametrize("hard", [0, 1])
def test_the_hard_layer_ranks_first(
    hard: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_workspace(tmp_path, hard))
    args = ["analyze", "layers", "spec.toml", "--keep", "1", "--steps", "30"]
    # random E and F: attention-initialised layers would be exact on these short reviews
    assert cli.main([*args, "--set", "student.mixer_options.init=random"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "layer", "residual"]
    assert lines[1].split()[:2] == ["1", str(hard)]
    assert lines[-1] == f"keep_attention = [{hard}]"
    with open(tmp_path / "analysis" / "layers.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["layer"]) for row in rows] == [hard, 1 - hard]
    assert float(rows[0]["residual"]) > 2 * float(rows[1]["residual"])


def test_keep_lists_the_worst_layers_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_workspace(tmp_path, 1))
    assert cli.main(["analyze", "layers", "spec.toml", "--keep", "2", "--steps", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "keep_attention = [0, 1]"
    assert cli.main(["analyze", "layers", "spec.toml", "--keep", "3", "--steps", "0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --keep 3: the student has only 2 converted layers"
    )


def test_set_overrides_the_spec_as_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_workspace(tmp_path, 1))
    args = ["analyze", "layers", "spec.toml", "--steps", "0", "--set", "student.mixer_options.k=0"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: spec.toml (--set student.mixer_options.k): student.mixer_options.k: "
        "Input should be greater than 0 (got 0) (mixer 'linformer')"
    )
