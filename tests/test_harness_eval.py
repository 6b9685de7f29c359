"""``cald eval``: lm-evaluation-harness on a tiny run's teacher and student, offline."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import build_ci_workspace

from cald_framework import cli
from cald_framework.analysis.runs import RunDirectory
from cald_framework.harness.tasks import CLOZE_DATA, paragraphs
from cald_framework.modeling import CaldModel

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "ci" / "causal-lm.toml"
#: short paragraphs of words the tiny tokenizer knows, each far below --max-length
TEXT = "the film was great\n\nboring plot and very dull cast\n\n\na fun film the cast was superb\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_ci_workspace(tmp_path_factory.mktemp("eval-run"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        assert cli.main(["run", str(SPEC), "--set", f"experiment.output_dir={root}/run"]) == 0
    (root / "held-out.txt").write_text(TEXT)
    return root


@pytest.fixture
def run(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The finished run, from its workspace (its spec names the tiny models relative to it)."""
    monkeypatch.chdir(workspace)
    return workspace / "run"


def _eval(run: Path, *extra: str) -> dict:
    text = run.parent / "held-out.txt"
    args = ["eval", str(run), "--limit", "6", "--max-length", "64", "--text", str(text), *extra]
    assert cli.main(args) == 0
    return json.loads((run / "eval.json").read_text())


def test_eval_scores_teacher_and_student_reproducibly(run: Path, capsys) -> None:
    first = _eval(run)
    printed = capsys.readouterr().out
    assert set(first["results"]) == {"teacher", "student"}
    for scores in first["results"].values():
        assert 0.0 <= scores["cald_cloze"]["acc"] <= 1.0
        perplexity = scores["cald_text"]["word_perplexity"]
        assert math.isfinite(perplexity) and perplexity > 1.0
    assert "| cald_text | word_perplexity |" in printed
    assert (run / "eval.md").read_text() in printed
    assert _eval(run) == first


def _reference_word_perplexity(model: CaldModel, tokenizer, text: str) -> float:
    """exp(-log-likelihood / words) over the paragraphs, each scored after the EOS token,
    which is what lm-eval's rolling log-likelihood does for inputs shorter than its window."""
    total, words = 0.0, 0
    for paragraph in paragraphs(text):
        ids = tokenizer(paragraph, add_special_tokens=False)["input_ids"]
        inputs = torch.tensor([[tokenizer.eos_token_id, *ids[:-1]]])
        with torch.no_grad():
            logits = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits
        total += logits.log_softmax(-1)[0, torch.arange(len(ids)), torch.tensor(ids)].sum().item()
        words += len(re.split(r"\s+", paragraph))
    return math.exp(-total / words)


def test_student_perplexity_matches_the_model_run_directly(run: Path) -> None:
    scores = _eval(run)["results"]["student"]["cald_text"]
    student = CaldModel.from_pretrained(run / "student").eval()
    tokenizer = RunDirectory.open(run, torch.device("cpu")).context.preprocessor
    expected = _reference_word_perplexity(student, tokenizer, TEXT)
    assert scores["word_perplexity"] == pytest.approx(expected, rel=1e-5)


def test_a_model_directory_is_evaluated_alone_with_the_run_tokenizer(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.json"
    args = ["eval", str(run / "student"), "--limit", "4", "--max-length", "64", "--out", str(out)]
    assert cli.main(args) == 0
    record = json.loads(out.read_text())
    assert list(record["results"]) == [str(run / "student")]
    assert (tmp_path / "student.md").is_file()


def test_bad_targets_and_tasks_are_one_line_errors(run: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}: neither a run directory (spec.toml) nor a model (config.json)\n"
    )
    assert cli.main(["eval", str(run), "--tasks", "cald_text"]) == 2
    assert capsys.readouterr().err == "error: task cald_text needs --text FILE\n"


def test_the_shipped_cloze_task_is_well_formed() -> None:
    rows = [json.loads(line) for line in CLOZE_DATA.read_text().splitlines()]
    assert len(rows) == 48
    for row in rows:
        assert len(set(row["choices"])) == 4 and 0 <= row["label"] < 4
    assert {row["label"] for row in rows} == {0, 1, 2, 3}
