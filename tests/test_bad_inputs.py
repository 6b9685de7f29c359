"""Bad inputs to ``run``: each one ends in exit code 2 and one line naming what is wrong and where.

Spec values are covered by ``test_spec_errors`` and ``test_spec_fuzz``, rows and columns in
depth by ``test_task_loading``, resampling by ``test_task_audio``; this file goes through the
command line with files that do not fit each other: data, tokenizer, teachers, waypoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cald_testing.workspaces import (
    DATA_FILE,
    MODEL_DIR,
    build_review_workspace,
    spec_with,
    write_bert,
)
from transformers import GPTNeoXConfig, GPTNeoXModel

from cald_framework import cli
from cald_framework.contracts import HeadSpec, Waypoint
from cald_framework.engine.tensorfiles import write_tensors
from cald_framework.engine.waypoints import write_manifest
from cald_framework.modeling import CaldModel
from cald_framework.spec.toml_writer import dumps

#: one epoch of 6 steps for the teacher and the student
QUICK = {"training.epochs": 1, "teacher.finetune.epochs": 1}
#: case -> (spec changes, the error line, or its beginning when it ends with "...")
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "empty-text": (
        {"task.data_files": "./empty-text.csv"},
        "error: ./empty-text.csv row 11: empty text in column 'text'",
    ),
    "unknown-label": (
        {"task.data_files": "./stale.csv", "task.label_names": ["fresh", "rotten"]},
        "error: ./stale.csv row 5: unknown label in column 'label': 'stale' (known: fresh, rotten)",
    ),
    "missing-column": (
        {"task.text_column": "review"},
        "error: ./reviews.csv: no column 'review'; the columns are: text, label",
    ),
    "target-with-3-labels": (
        {"teacher.target": "./target-3-labels"},
        "error: teacher.target ./target-3-labels has a classification head with 3 labels, but the "
        "task needs a classification head with 2 labels",
    ),
    "target-of-another-width": (
        {"teacher.target": "./target-wide"},
        "error: teacher.target ./target-wide was not fine-tuned from teacher.model './tiny-bert': "
        "backbone tensor 'embeddings.LayerNorm.bias' is [32] there and [16] in teacher.model",
    ),
    "target-of-another-family": (
        {"teacher.target": "./target-neox"},
        "error: teacher.target ./target-neox is a 'gpt-neox' model, but teacher.source is 'bert'",
    ),
    "target-not-from-cald": (
        {"teacher.target": f"./{MODEL_DIR}"},
        f"error: {MODEL_DIR} is not a saved CaldModel: its config.json is for a 'bert' model "
        "(give the source family's checkpoints as teacher.model)",
    ),
    "tokenizer-larger-than-embeddings": (
        {"teacher.model": "./big-vocab"},
        "error: the tokenizer of teacher.model './big-vocab' has 24 tokens, but the model has "
        "embeddings for 19: use the tokenizer the model was trained with",
    ),
    "longer-than-the-position-table": (
        {"task.max_length": 64},
        "error: sequences of up to 64 positions (task.max_length or student.max_length) are longer "
        "than teacher.model './tiny-bert' takes (max_position_embeddings = 32)",
    ),
    "teacher-of-another-family": (
        {"teacher.model": "./neox"},
        "error: GPTNeoXModel does not have the bert layout: no 'encoder.layer' under GPTNeoXModel",
    ),
    "teacher-directory-empty": (
        {"teacher.model": "./empty"},
        "error: cannot load bert model './empty': ./empty is empty",
    ),
    "teacher-directory-without-a-model": (
        {"teacher.model": "./tokenizer-only"},
        "error: cannot load bert model './tokenizer-only': ./tokenizer-only has no config.json, so "
        "it holds no saved model",
    ),
    "more-waypoints-than-steps": (
        {"teacher.num_waypoints": 50},
        "error: teacher.num_waypoints = 50 is more than the 6 steps of the teacher fine-tuning run",
    ),
    "waypoint-of-another-width": (
        {"guidance.mode": "waypoint", "teacher.waypoints": "./wide-waypoints"},
        "error: waypoint wide-waypoints/step-00000003.safetensors does not fit teacher.model: "
        "Error(s) in loading state_dict for CaldModel: size mismatch for ...",
    ),
}


def _write_table(path: Path, reviews: Path, row: int, replacement: str) -> None:
    """The reviews with data row ``row`` (1-based) replaced."""
    lines = reviews.read_text().splitlines()
    lines[row] = replacement
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workspace plus every misfit: bad tables, teachers, a tokenizer and waypoints."""
    root = tmp_path_factory.mktemp("bad-inputs")
    build_review_workspace(root)
    _write_table(root / "empty-text.csv", root / DATA_FILE, 11, ",fresh")
    _write_table(root / "stale.csv", root / DATA_FILE, 5, "dull plot,stale")
    head = HeadSpec("classification", 2)
    CaldModel.from_source("bert", str(root / MODEL_DIR), HeadSpec("classification", 3)).save_pretrained(
        root / "target-3-labels"
    )
    write_bert(root / "wide", hidden_size=32)
    wide = CaldModel.from_source("bert", str(root / "wide"), head)
    wide.save_pretrained(root / "target-wide")
    write_tensors(root / "wide-waypoints" / "step-00000003.safetensors", wide.state_dict())
    write_manifest(
        root / "wide-waypoints", 6, [Waypoint(3, root / "wide-waypoints" / "step-00000003.safetensors")]
    )
    neox = GPTNeoXModel(GPTNeoXConfig(
        vocab_size=19, hidden_size=16, num_attention_heads=2, intermediate_size=32,
        num_hidden_layers=2, max_position_embeddings=32,
    ))
    neox.save_pretrained(root / "neox")
    for folder in ("neox", "tokenizer-only"):
        (root / folder).mkdir(exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (root / folder / name).write_bytes((root / MODEL_DIR / name).read_bytes())
    CaldModel.from_source("gpt-neox", str(root / "neox"), head).save_pretrained(root / "target-neox")
    write_bert(root / "big-vocab", extra_vocab=5)
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_it(
    workspace: Path, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    changes, expected = CASES[case]
    monkeypatch.chdir(workspace)
    spec = spec_with({**QUICK, **changes, "experiment.output_dir": f"runs/{case}"})
    Path(f"{case}.toml").write_text(dumps(spec))

    assert cli.main(["run", f"{case}.toml"]) == cli.USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    if expected.endswith("..."):
        line, expected = line[: len(expected) - 3], expected[:-3]
    assert line == expected
