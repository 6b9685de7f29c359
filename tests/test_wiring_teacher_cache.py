"""The teacher-cache key: what the fine-tuned teacher depends on, and nothing else.

A cached fine-tuning run is reused by every later run whose key matches, so a setting the
fine-tuned teacher depends on but the key leaves out would silently hand a run the wrong
teacher, and a setting in the key that the teacher does not depend on would fine-tune again
for nothing (the guidance modes of one spec share one teacher).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cald_framework.run.prepare import RunContext
from cald_framework.run.teachers import teacher_cache_key
from cald_framework.spec import load_spec
from cald_testing.workspaces import build_review_workspace


#: --set overrides that change the fine-tuned teacher
CHANGES_THE_TEACHER = {
    "its learning rate": "teacher.finetune.lr=0.002",
    "its epochs": "teacher.finetune.epochs=3",
    "the training settings it inherits": "training.batch_size=4",
    "the seed": "experiment.seed=6",
    "the number of waypoints": "teacher.num_waypoints=4",
    "the pretrained model": "teacher.model=./other-bert",
    "the task's data": "task.max_length=12",
}
#: --set overrides that only concern the student
LEAVES_THE_TEACHER = {
    "the student's learning rate": "training.lr=0.003",
    "the guidance mode": "guidance.mode=waypoint",
    "the mixer's options": "student.mixer_options.k=4",
    "the output directory": "experiment.output_dir=elsewhere",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache-key")
    build_review_workspace(root)
    shutil.copytree(root / "tiny-bert", root / "other-bert")
    return root


@pytest.fixture
def key_with(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``key_with(*overrides)``: the key of the workspace's spec under ``--set`` overrides."""
    monkeypatch.chdir(workspace)

    def key(*overrides: str) -> str:
        return teacher_cache_key(RunContext.from_spec(load_spec("spec.toml", overrides)))

    return key


@pytest.mark.parametrize("override", CHANGES_THE_TEACHER.values(), ids=CHANGES_THE_TEACHER)
def test_a_setting_the_teacher_depends_on_changes_the_key(key_with: Callable[..., str], override: str) -> None:
    assert key_with(override) != key_with()


@pytest.mark.parametrize("override", LEAVES_THE_TEACHER.values(), ids=LEAVES_THE_TEACHER)
def test_a_student_setting_keeps_the_key(key_with: Callable[..., str], override: str) -> None:
    assert key_with(override) == key_with()
