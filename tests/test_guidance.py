"""The built-in guidance modes: which teacher runs at which step, with which loss weights."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from cald_framework.contracts import AvailableTeachers, LossWeights
from cald_framework.contracts import guidance as guidance_contract
from cald_framework.engine import GuidanceSetup, LossConfig, StepEnd, train
from cald_framework.engine.checkpoints import open_checkpoint
from cald_framework.errors import CaldError
from cald_framework.plugin_manager import load_registries
from cald_guidance.plugin import MODES
from cald_framework.testing.engine import (
    Counting,
    TinyModel,
    TinyTask,
    WaypointLoader,
    all_layers,
    calls_per_step,
    evaluation,
    make_waypoints,
    mark_steps,
    state_of,
    tiny_data,
    training,
)

BY_NAME = {mode.name: mode for mode in MODES}
ALL_TERMS = LossWeights(task=1.0, kd=1.0, ld=1.0)


def _never(*_: object) -> Any:
    raise AssertionError("this mode must not ask for this teacher")


def _run(
    mode: str,
    out: Path,
    teachers: AvailableTeachers,
    options: dict[str, Any] | None = None,
    *,
    student: TinyModel | None = None,
    on_step_end: Any = None,
    **changes: Any,
) -> Any:
    plugin = BY_NAME[mode]
    setup = GuidanceSetup(plugin, plugin.options.model_validate(options or {}), teachers)
    return train(
        student or TinyModel(seed=1), TinyTask(), tiny_data(), training=training(**changes),
        evaluation=evaluation(select_best=False), loss=LossConfig(ALL_TERMS), output_dir=out,
        seed=0, guidance=setup, extractor=all_layers, on_step_end=on_step_end,
    )


def _logged_terms(out: Path) -> list[set[str]]:
    events = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [{"task", "kd", "ld"} & set(e) for e in events if e["event"] == "train"]


def test_builtins_are_registered_through_the_entry_point() -> None:
    registry = load_registries().guidance
    found = {name: registry.get(name) for name in ("unguided", "target", "trajectory", "waypoint", "hybrid")}
    flags = {n: (p.needs_target_teacher, p.needs_waypoints, p.default_init) for n, p in found.items()}
    assert flags == {
        "unguided": (False, False, "target"),
        "target": (True, False, "target"),
        "trajectory": (False, False, "source"),
        "waypoint": (False, True, "source"),
        "hybrid": (True, False, "target"),
    }


def test_unguided_never_builds_or_calls_a_teacher(tmp_path: Path) -> None:
    teachers = AvailableTeachers(source=_never, target=_never, load_teacher=_never)
    _run("unguided", tmp_path, teachers)
    assert _logged_terms(tmp_path) == [{"task"}] * 6


@pytest.mark.parametrize("train_mode", [False, True])
def test_target_runs_the_frozen_teacher_once_per_micro_batch(tmp_path: Path, train_mode: bool) -> None:
    log: list[str] = []
    built: list[Counting] = []

    def target() -> Counting:
        built.append(Counting(TinyModel(seed=5), "target", log))
        return built[-1]

    teachers = AvailableTeachers(target=target, source=_never, train_mode=train_mode)
    result = _run("target", tmp_path, teachers, on_step_end=mark_steps(log), batch_size=2, grad_accum=2)
    assert result.trained_teacher is None  # a frozen teacher is not the run's to report
    assert len(built) == 1
    assert calls_per_step(log) == [["target", "target"]] * 6
    assert built[0].conditions == {(train_mode, True, False)}  # inference mode, no grad
    assert all(not p.requires_grad for p in built[0].parameters())
    assert _logged_terms(tmp_path) == [{"task", "kd", "ld"}] * 6


@pytest.mark.parametrize("precision, autocast", [(None, None), ("bf16", torch.bfloat16)])
def test_teacher_precision_can_differ_from_the_run(tmp_path: Path, precision: str | None, autocast: torch.dtype | None) -> None:
    teacher = Counting(TinyModel(seed=5), "target", [])
    _run("target", tmp_path, AvailableTeachers(target=lambda: teacher, precision=precision), max_steps=1)  # type: ignore[arg-type]
    assert teacher.autocast == {autocast}


def test_missing_teacher_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaldError, match="guidance mode 'target' needs the fine-tuned target teacher, but none was given"):
        _run("target", tmp_path, AvailableTeachers())


def test_kd_and_ld_are_zero_when_student_equals_teacher(tmp_path: Path) -> None:
    student = TinyModel(seed=3, dropout=0.0)
    teachers = AvailableTeachers(target=lambda: TinyModel(seed=3, dropout=0.0))
    _run("target", tmp_path, teachers, student=student, max_steps=1)
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert (first["kd"], first["ld"]) == (0.0, 0.0) and first["task"] > 0


@pytest.mark.parametrize("t_h, guided", [(2, 2), (0.5, 3)])
def test_hybrid_stops_guidance_and_teacher_after_t_h(tmp_path: Path, t_h: float, guided: int) -> None:
    log: list[str] = []
    teachers = AvailableTeachers(target=lambda: Counting(TinyModel(seed=5), "target", log))
    _run("hybrid", tmp_path, teachers, {"T_h": t_h}, on_step_end=mark_steps(log))
    assert calls_per_step(log) == [["target"]] * guided + [[]] * (6 - guided)
    assert _logged_terms(tmp_path) == [{"task", "kd", "ld"}] * guided + [{"task"}] * (6 - guided)


def test_hybrid_can_keep_logit_distillation_after_t_h(tmp_path: Path) -> None:
    log: list[str] = []
    built: list[Counting] = []

    def target() -> Counting:
        built.append(Counting(TinyModel(seed=5), "target", log))
        return built[-1]

    options = {"T_h": 2, "keep_kd_after_switch": True}
    _run("hybrid", tmp_path, AvailableTeachers(target=target), options, on_step_end=mark_steps(log))
    assert len(built) == 1  # the same teacher gives the logits after the switch
    assert calls_per_step(log) == [["target"]] * 6
    assert _logged_terms(tmp_path) == [{"task", "kd", "ld"}] * 2 + [{"task", "kd"}] * 4


@pytest.mark.parametrize(
    "value, message",
    [(1.0, "a fraction of the run must be below 1 (got 1.0); write a whole number for steps"),
     (0, "Input should be greater than 0")],
)
def test_hybrid_t_h_is_validated(value: float, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BY_NAME["hybrid"].options.model_validate({"T_h": value})


@pytest.mark.parametrize(
    "t_w, expected",
    [
        # default T_w = 6 // 3 = 2: steps 0-1 use the waypoint of step 2, 2-3 that of 4, 4-5 that of 6
        (None, ["step-00000002"] * 2 + ["step-00000004"] * 2 + ["step-00000006"] * 2),
        # T_w = 4: chosen at step 0 (first ahead: 2) and step 4 (first ahead: 6)
        (4, ["step-00000002"] * 4 + ["step-00000006"] * 2),
    ],
)
def test_waypoint_teacher_is_the_first_ahead(tmp_path: Path, t_w: int | None, expected: list[str]) -> None:
    log: list[str] = []
    loader = WaypointLoader(log)
    teachers = AvailableTeachers(waypoints=make_waypoints(tmp_path / "wp"), load_teacher=loader, target=_never)
    _run("waypoint", tmp_path / "run", teachers, {"T_w": t_w} if t_w else {}, on_step_end=mark_steps(log))
    assert [names[0] for names in calls_per_step(log)] == expected
    assert [len(names) for names in calls_per_step(log)] == [1] * 6
    assert loader.alive_at_load == [0] * len(set(expected))  # one waypoint in memory at a time


def test_waypoint_after_the_last_keeps_the_last(tmp_path: Path) -> None:
    log: list[str] = []
    teachers = AvailableTeachers(waypoints=make_waypoints(tmp_path / "wp", (1, 2)), load_teacher=WaypointLoader(log))
    _run("waypoint", tmp_path / "run", teachers, {"T_w": 1}, on_step_end=mark_steps(log), max_steps=4)
    assert [names[0] for names in calls_per_step(log)] == ["step-00000001", "step-00000002", "step-00000002", "step-00000002"]


def test_trajectory_teacher_updates_every_t_u_steps(tmp_path: Path) -> None:
    log: list[str] = []
    teacher = Counting(TinyModel(seed=7), "trajectory", log)
    snapshots = [state_of(teacher)]

    def record(end: StepEnd) -> None:
        log.append("|")
        snapshots.append(state_of(teacher))

    result = _run("trajectory", tmp_path, AvailableTeachers(source=lambda: teacher, target=_never),
                  {"T_u": 2, "teacher_lr": 0.05}, on_step_end=record, batch_size=2, grad_accum=2,
                  save_every=1, keep_last=6)
    assert result.trained_teacher is teacher  # the run reports the teacher it trained
    changed = [
        not torch.equal(before["model.head.weight"], after["model.head.weight"])
        for before, after in zip(snapshots, snapshots[1:])
    ]
    assert changed == [False, True] * 3
    # on update steps, a train-mode forward learns and an eval-mode one gives the targets
    assert calls_per_step(log) == [["trajectory"] * 2, ["trajectory"] * 4] * 3
    modes = {(training, inference) for training, inference, _ in teacher.conditions}
    assert modes == {(False, True), (True, False)}  # eval-mode targets; it learns with dropout
    checkpoint = open_checkpoint(tmp_path / "checkpoints" / "step-00000004")
    student_keys = set(checkpoint.part("model"))
    assert student_keys == set(TinyModel().state_dict())  # the teacher stays out of the student's file
    guidance = checkpoint.part("guidance")
    assert torch.equal(guidance["teacher"]["model.head.weight"], snapshots[4]["model.head.weight"])
    assert guidance["scheduler"]["last_epoch"] == 2 and len(guidance["optimizer"]["state"]) > 0


def test_the_contract_documentation_shows_a_working_third_party_mode(tmp_path: Path) -> None:
    """The example in the guidance contract's docstring, run as written, is a complete mode."""
    example = textwrap.dedent(guidance_contract.__doc__.rsplit("::\n", 1)[1])
    namespace: dict[str, Any] = {}
    exec(example, namespace)
    registered: list[Any] = []
    namespace["cald_register_guidance"](registered.append)
    (plugin,) = registered
    assert (plugin.name, plugin.needs_target_teacher) == ("every-other", True)
    log: list[str] = []
    teachers = AvailableTeachers(target=lambda: Counting(TinyModel(seed=5), "target", log))
    train(
        TinyModel(seed=1), TinyTask(), tiny_data(), training=training(),
        evaluation=evaluation(select_best=False), loss=LossConfig(ALL_TERMS), output_dir=tmp_path,
        seed=0, guidance=GuidanceSetup(plugin, plugin.options(), teachers), extractor=all_layers,
        on_step_end=mark_steps(log),
    )
    assert calls_per_step(log) == [["target"], []] * 3
    assert _logged_terms(tmp_path) == [{"task", "kd", "ld"}, {"task"}] * 3
