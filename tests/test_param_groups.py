"""``[[training.param_groups]]`` and ``training.weight_decay_on``: selection, rates, decay, freezing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from cald_framework.contracts import LossWeights
from cald_framework.conversion import convert
from cald_framework.engine import LossConfig, train
from cald_framework.engine.optim import build_optimizer
from cald_framework.engine.param_groups import new_parameter_names
from cald_framework.engine.schedules import build_scheduler
from cald_framework.errors import CaldError
from cald_framework.spec import load_spec
from cald_framework.testing.engine import TinyTask, evaluation, state_of, tiny_data, training
from tests.test_engine_resume import Crash, _crash_at

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def student(make_teacher: Any, mixer_plugins: Any) -> Any:
    """A converted two-layer BERT whose mixers (and shared scale) are the new parameters."""
    converted, report = convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {}, max_length=40)
    return converted.train()


def _names(model: Any, group: dict[str, Any]) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in group["params"]}


def _step(model: Any, inputs: dict[str, torch.Tensor], optimizer: Any, scheduler: Any) -> None:
    model(**inputs).logits.pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def test_new_parameters_are_the_ones_the_conversion_created(make_teacher: Any, mixer_plugins: Any) -> None:
    teacher = make_teacher("bert")
    converted, report = convert(teacher, mixer_plugins["cumulative-mean"], {}, max_length=40)
    parameters = {name for name, _ in converted.named_parameters()}
    assert new_parameter_names(converted) == set(report.new) & parameters
    assert new_parameter_names(converted) and new_parameter_names(teacher) == set()


def test_frozen_steps_lr_scales_and_group_decay(student: Any, make_inputs: Any) -> None:
    settings = training(
        lr=1e-3, weight_decay=0.05, schedule="linear", max_steps=4,
        param_groups=[
            {"select": "transferred", "freeze_steps": 2},
            {"select": "new", "lr_scale": 10.0, "weight_decay": 0.3},
        ],
    )
    optimizer = build_optimizer(student, settings, param_groups=True)
    scheduler = build_scheduler(optimizer, settings, total_steps=4)
    default, default_plain, old, old_plain, new, new_plain = optimizer.param_groups
    assert not default["params"] and not default_plain["params"]  # the two groups took everything
    assert _names(student, new) | _names(student, new_plain) == new_parameter_names(student)
    assert (old["weight_decay"], new["weight_decay"], new_plain["weight_decay"]) == (0.05, 0.3, 0.0)
    inputs = make_inputs("bert")
    transferred = {n: p for n, p in student.named_parameters() if n not in new_parameter_names(student)}
    before = {n: p.detach().clone() for n, p in transferred.items()}
    for step, factor in enumerate([1.0, 0.75, 0.5, 0.25]):
        lrs = [group["lr"] for group in optimizer.param_groups]
        frozen = 0.0 if step < 2 else 1e-3 * factor
        assert lrs == pytest.approx([1e-3 * factor] * 2 + [frozen] * 2 + [1e-2 * factor] * 2)
        _step(student, inputs, optimizer, scheduler)
        if step == 1:
            assert all(torch.equal(p, before[n]) for n, p in transferred.items())
    assert not all(torch.equal(p, before[n]) for n, p in transferred.items())


def test_freeze_turns_gradients_off_and_leaves_the_group_out(student: Any, make_inputs: Any) -> None:
    settings = training(param_groups=[{"pattern": "backbone.*.layer.0.*", "freeze": True}])
    optimizer = build_optimizer(student, settings, param_groups=True)
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad]
    assert frozen and all(".layer.0." in name for name in frozen)
    assert not {n for group in optimizer.param_groups for n in _names(student, group)} & set(frozen)
    before = state_of(student)
    _step(student, make_inputs("bert"), optimizer, build_scheduler(optimizer, settings, 6))
    assert all(torch.equal(student.state_dict()[n], before[n]) for n in frozen)


def test_weight_decay_on_new_decays_only_the_mixers(student: Any) -> None:
    optimizer = build_optimizer(student, training(weight_decay=0.1, weight_decay_on="new"), param_groups=True)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and decayed["params"]
    assert _names(student, decayed) <= new_parameter_names(student)
    assert "backbone.encoder.layer.0.output.dense.weight" in _names(student, plain)
    assert build_optimizer(student, training(weight_decay_on="new")).param_groups[0]["params"]  # not grouped


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"pattern": "*.nothing.*"}], "training.param_groups[0] (pattern '*.nothing.*') selects nothing: it matches no parameter name"),
        ([{"select": "new"}, {"pattern": "*.attention.self.*"}], "training.param_groups[1] (pattern '*.attention.self.*') selects nothing: every parameter it matches was taken by an earlier group"),
    ],
)
def test_a_group_that_selects_nothing_is_named(student: Any, groups: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(CaldError, match=re.escape(message)):
        build_optimizer(student, training(param_groups=groups), param_groups=True)


def test_new_parameters_need_a_converted_model(make_teacher: Any) -> None:
    teacher = make_teacher("bert").train()
    with pytest.raises(CaldError, match="select 'new'.*no parameters the conversion created"):
        build_optimizer(teacher, training(param_groups=[{"select": "new"}]), param_groups=True)
    with pytest.raises(CaldError, match="weight_decay_on = 'new' needs a converted student"):
        build_optimizer(teacher, training(weight_decay_on="new"), param_groups=True)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"lr_scale": 2.0}, "needs a pattern, a select, or both"),
        ({"select": "new", "freeze": True, "lr_scale": 2.0}, "freeze = true never trains"),
        ({"select": "old"}, "'new' or 'transferred'"),
    ],
)
def test_groups_are_checked_in_the_spec(group: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        training(param_groups=[group])
    with pytest.raises(ValidationError, match="group 1 selects what group 0 already took"):
        training(param_groups=[{"select": "new"}, {"select": "new", "lr_scale": 3.0}])


def test_the_lm_spec_decays_only_the_mixers_and_the_teacher_run_inherits_no_groups() -> None:
    validated = load_spec(ROOT / "specs/paper/lm-pythia1b-mamba-pile.toml")
    assert validated.spec.training.weight_decay_on == "new"
    assert validated.teacher_training.weight_decay_on == "all"


def run_converted(
    student: Any, out: Path, changes: dict[str, Any], *, resume: bool = False, crash_at: int | None = None
) -> Any:
    """Four steps of the converted student on the tiny task, a checkpoint every 2."""
    settings = training(max_steps=4, save_every=2, schedule="linear", lr=1e-3, **changes)
    train(
        student, TinyTask(), tiny_data(train=16, eval=4), loss=LossConfig(LossWeights(1.0, 0.0, 0.0)),
        training=settings, evaluation=evaluation(select_best=False), output_dir=out,
        seed=3, resume=resume, on_step_end=_crash_at(crash_at) if crash_at else None,
    )
    return student


@pytest.mark.parametrize(
    "changes",
    [
        {"param_groups": [{"select": "transferred", "freeze_steps": 3}, {"select": "new", "lr_scale": 5.0}]},
        {"optimizer": "adafactor", "weight_decay_on": "new"},
    ],
    ids=["freeze-steps", "adafactor"],
)
def test_resume_is_bitwise_with_groups_and_adafactor(
    make_teacher: Any, mixer_plugins: Any, tmp_path: Path, changes: dict[str, Any]
) -> None:
    def fresh() -> Any:
        return convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {}, max_length=40)[0]

    straight = run_converted(fresh(), tmp_path / "straight", changes)
    with pytest.raises(Crash):
        run_converted(fresh(), tmp_path / "cut", changes, crash_at=3)
    resumed = run_converted(fresh(), tmp_path / "cut", changes, resume=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
