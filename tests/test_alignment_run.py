"""``run`` with ``guidance.align_steps``: events, results, and a resume in the middle of alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import build_review_workspace

from cald_framework import cli
from cald_framework.engine import alignment, tensorfiles
from cald_framework.errors import CaldError
from cald_framework.layout import ALIGNMENT_DIR, step_name

#: no teacher fine-tuning, four alignment steps with a checkpoint after each, then six training
#: steps; random E and F, which alignment has something to learn for
ALIGNED = {
    "student.mixer_options.init": "random",
    "guidance.mode": "unguided",
    "student.init": "source",
    "guidance.align_steps": 4,
    "guidance.align_lr": 3e-3,
    "training.epochs": 1,
    "training.log_every": 2,
}
STUDENT = Path("run") / "student" / "model.safetensors"


def _run(workspace: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(workspace)
    return cli.main(["run", "spec.toml", *extra])


def _events(workspace: Path) -> list[dict]:
    lines = (workspace / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _counting_steps(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[int]:
    """Count alignment steps; with ``fail_at``, the step of that number stops the run."""
    calls: list[int] = []
    real = alignment.Aligner.step

    def step(self: alignment.Aligner, inputs: dict) -> torch.Tensor:
        calls.append(len(calls) + 1)
        if calls[-1] == fail_at:
            raise CaldError("stopped for the test")
        return real(self, inputs)

    monkeypatch.setattr(alignment.Aligner, "step", step)
    return calls


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aligned")
    build_review_workspace(root, ALIGNED)
    with pytest.MonkeyPatch.context() as patch:
        assert _run(root, patch) == 0
    return root


def test_alignment_events_carry_each_layers_error(finished: Path) -> None:
    events = _events(finished)
    aligned = [event for event in events if event["event"] == "align"]
    assert [event["align_step"] for event in aligned] == [2, 4]
    assert events[: len(aligned)] == aligned  # before any training event
    for event in aligned:
        assert event["step"] == 0 and event["layers"] == [0, 1] and event["lr"] == 3e-3
        assert len(event["align_layers"]) == 2
        assert event["loss"] == pytest.approx(sum(event["align_layers"]) / 2)
    assert aligned[-1]["align_layers"][0] < aligned[0]["align_layers"][0]
    assert set(aligned[-1]["metrics"]) == {"accuracy", "f1", "macro_f1"}
    assert any(event["event"] == "train" for event in events)


def test_results_report_the_student_after_alignment(finished: Path) -> None:
    results = json.loads((finished / "run" / "results.json").read_text())
    aligned = results["aligned_student_metrics"]
    assert set(aligned) == set(results["initial_student_metrics"]) == {"accuracy", "f1", "macro_f1"}
    last = [event for event in _events(finished) if event["event"] == "align"][-1]
    assert aligned == last["metrics"]
    assert 0 < results["align_wall_seconds"] < results["total_wall_seconds"]
    report = (finished / "run" / "report.md").read_text()
    assert "| | teacher | student after conversion | student after alignment | student |" in report
    assert [path.name for path in (finished / "run" / ALIGNMENT_DIR).iterdir()] == [step_name(4)]


def test_no_alignment_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_review_workspace(tmp_path, {**ALIGNED, "guidance.align_steps": None, "training.max_steps": 2})
    calls = _counting_steps(monkeypatch)
    assert _run(tmp_path, monkeypatch) == 0
    assert calls == []
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["aligned_student_metrics"] is None
    assert results["align_wall_seconds"] is None
    assert not any(event["event"] == "align" for event in _events(tmp_path))
    assert "after alignment" not in (tmp_path / "run" / "report.md").read_text()


def test_resume_during_alignment_is_bitwise(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_review_workspace(tmp_path, ALIGNED)
    with monkeypatch.context() as patch:
        _counting_steps(patch, fail_at=3)
        assert _run(tmp_path, monkeypatch) == 2
    assert [path.name for path in (tmp_path / "run" / ALIGNMENT_DIR).iterdir()] == [step_name(2)]
    calls = _counting_steps(monkeypatch)
    assert _run(tmp_path, monkeypatch, "--resume") == 0
    assert calls == [1, 2]  # steps 3 and 4 only
    left, right = tensorfiles.read_tensors(finished / STUDENT), tensorfiles.read_tensors(tmp_path / STUDENT)
    assert left.keys() == right.keys()
    assert all(torch.equal(left[name], right[name]) for name in left)
    assert _timeless(_events(finished)) == _timeless(_events(tmp_path))


def _timeless(events: list[dict]) -> list[dict]:
    """The events without timings, and without the warning that a resumed training run logs."""
    return [
        {key: value for key, value in event.items() if key != "samples_per_s"}
        for event in events
        if event["event"] != "warning"
    ]


def test_a_finished_alignment_is_not_redone(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = json.loads((finished / "run" / "results.json").read_text())["aligned_student_metrics"]
    calls = _counting_steps(monkeypatch)
    assert _run(finished, monkeypatch, "--resume") == 0
    assert calls == []
    after = json.loads((finished / "run" / "results.json").read_text())["aligned_student_metrics"]
    assert after == before
