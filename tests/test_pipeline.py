"""`run` end to end on a tiny BERT saved to disk: every guidance mode, export, reload, results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import write_review_files

from cald_framework import cli
from cald_framework.modeling import CaldModel
from cald_framework.spec import load_spec

SPEC = """\
[experiment]
name = "tiny-{mode}"
output_dir = "runs/{{name}}"
teacher_cache = "runs/teacher-cache"
seed = 3

[teacher]
source = "bert"
model = "./tiny-bert"
num_waypoints = 3

[teacher.finetune]
epochs = 3
lr = 1e-3

[student]
mixer = "linformer"

[student.mixer_options]
k = 8

[task]
kind = "text-classification"
dataset = "csv"
data_files = "./reviews.csv"
eval_from_train = 0.25
max_length = 16

[guidance]
mode = "{mode}"
{extra}

[training]
lr = 1e-3
batch_size = 8
epochs = 2
warmup_ratio = 0.1
log_every = 2
"""

MODES = {
    "unguided": "",
    "target": "",
    "trajectory": "T_u = 2",
    "waypoint": "",
    "hybrid": "T_h = 0.5",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    write_review_files(root)
    for mode, extra in MODES.items():
        (root / f"{mode}.toml").write_text(SPEC.format(mode=mode, extra=extra))
    return root


@pytest.mark.parametrize("mode", list(MODES))
def test_run_every_mode(workdir: Path, mode: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(workdir)
    assert cli.main(["run", f"{mode}.toml"]) == 0
    printed = json.loads(capsys.readouterr().out)
    run = workdir / "runs" / f"tiny-{mode}"
    results = json.loads((run / "results.json").read_text())
    assert printed["mode"] == results["mode"] == mode
    assert results["task"] == "text-classification"
    assert results["source"] == "bert" and results["mixer"] == "linformer"
    assert results["student_init"] == ("source" if mode in ("trajectory", "waypoint") else "target")
    assert set(results["student_metrics"]) >= {"accuracy", "f1"}
    assert set(results["teacher_metrics"]) >= {"accuracy", "f1"}
    assert results["steps"] == 12  # 48 training rows / batch 8 = 6 steps, 2 epochs
    assert results["student_parameters"] > 0 and results["teacher_parameters"] > 0
    assert results["speed"]["teacher_ms"] > 0 and results["speed"]["student_ms"] > 0
    assert (run / "report.md").read_text().startswith(f"# tiny-{mode}")
    transfer = json.loads((run / "transfer_report.json").read_text())
    assert transfer["unexpected_missing"] == [] and transfer["unexpected_new"] == []
    assert load_spec(run / "spec.toml").spec == load_spec(f"{mode}.toml").spec

    student = CaldModel.from_pretrained(run / "student")
    assert student.config.mixer == "linformer"
    batch = {"input_ids": torch.tensor([[3, 4, 5, 6]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    again = CaldModel.from_pretrained(run / "student")
    torch.testing.assert_close(student(**batch).logits, again(**batch).logits, rtol=0, atol=0)


def test_teacher_is_fine_tuned_once_and_shared(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    for mode in MODES:  # the runs of test_run_every_mode, where it did not run first
        if not (workdir / "runs" / f"tiny-{mode}" / "results.json").is_file():
            assert cli.main(["run", f"{mode}.toml"]) == 0
    caches = list((workdir / "runs" / "teacher-cache").iterdir())
    assert len(caches) == 1
    manifest = json.loads((caches[0] / "waypoints.json").read_text())
    assert sorted(int(step) for step in manifest["waypoints"]) == [6, 12, 18]
    done = json.loads((caches[0] / "DONE.json").read_text())
    reported = [
        json.loads((workdir / "runs" / f"tiny-{mode}" / "results.json").read_text())["teacher_finetune_wall_seconds"]
        for mode in MODES
    ]
    # the run that fine-tuned reports the time the cache keeps; runs that reused it report none
    assert [seconds for seconds in reported if seconds is not None] == [done["wall_seconds"]]
