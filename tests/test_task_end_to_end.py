"""Every task plugin end to end: each CI spec (``specs/ci/``) through ``run``, as shipped.

A run fine-tunes the tiny teacher where its mode needs one, converts, trains, evaluates and
exports. The exported student is then reloaded: evaluated again on the same data it must give
the metrics of ``results.json``, and two reloads give identical logits; the student converted
again from the run's teachers must give its ``initial_student_metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_testing.workspaces import build_ci_workspace

from cald_framework import cli
from cald_framework.engine.evaluation import evaluate_model
from cald_framework.modeling import CaldModel
from cald_framework.run.convert import convert_student
from cald_framework.run.prepare import RunContext
from cald_framework.run.teachers import resolve_teachers
from cald_framework.spec import load_spec

CI_SPECS = Path(__file__).resolve().parents[1] / "specs" / "ci"

#: task -> (mixer, mode, student init, the metrics it reports)
CASES: dict[str, tuple[str, str, str, set[str]]] = {
    "text-classification": ("linformer", "target", "target", {"accuracy", "macro_f1", "f1"}),
    "causal-lm": ("mamba", "trajectory", "source", {"perplexity"}),
    "ctc-asr": ("bimamba2", "target", "target", {"wer", "cer"}),
    "intent-classification": (
        "bimamba2",
        "hybrid",
        "target",
        {"intent_accuracy", "scenario_accuracy", "action_accuracy"},
    ),
    "speaker-id": ("bimamba2", "waypoint", "source", {"accuracy"}),
    "audio-classification": ("bimamba2", "unguided", "target", {"accuracy", "macro_f1"}),
}
STEPS = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ci_workspace(tmp_path_factory.mktemp("tasks"))


def read_results(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


@pytest.mark.parametrize("kind", list(CASES))
def test_task_runs_end_to_end_and_its_export_reloads(
    workdir: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    spec = CI_SPECS / f"{kind}.toml"
    assert cli.main(["run", str(spec)]) == 0

    mixer, mode, init, metric_names = CASES[kind]
    run = workdir / "runs" / f"ci-{kind}"
    results = read_results(run)
    assert (results["task"], results["mixer"], results["mode"]) == (kind, mixer, mode)
    assert results["student_init"] == init
    assert results["steps"] == STEPS
    assert set(results["student_metrics"]) == set(results["teacher_metrics"]) == metric_names
    assert results["primary_metric"] in metric_names
    transfer = json.loads((run / "transfer_report.json").read_text())
    assert transfer["unexpected_missing"] == [] and transfer["unexpected_new"] == []

    validated = load_spec(spec)
    context = RunContext.from_spec(validated)  # the task and data exactly as the run had them
    task, data = context.task, context.data
    student = CaldModel.from_pretrained(run / "student")
    assert student.config.mixer == mixer
    metrics = evaluate_model(student, task, data, validated.spec.training)
    assert metrics == pytest.approx(results["student_metrics"], rel=1e-6, abs=1e-9)

    # the student as converted, before training: rebuilt from the run's own teachers
    converted = convert_student(context, resolve_teachers(context, resume=False))
    initial = evaluate_model(converted, task, data, validated.spec.training)
    assert set(results["initial_student_metrics"]) == metric_names
    assert initial == pytest.approx(results["initial_student_metrics"], rel=1e-6, abs=1e-9)

    batch = data.collate([data.eval[index] for index in range(min(3, len(data.eval)))])
    again = CaldModel.from_pretrained(run / "student")
    with torch.inference_mode():
        assert torch.equal(student(**batch["inputs"]).logits, again(**batch["inputs"]).logits)
