"""The installed third-party example plugin, found through its entry point, converts real models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

pytest.importorskip("cald_retnet_mixer", reason="make install puts examples/cald-retnet-mixer in .venv")


@pytest.mark.parametrize("case", ["gpt-neox", "llama", "bert"])
def test_retention_converts_and_round_trips(
    case: str,
    make_teacher: Callable[..., CaldModel],
    make_inputs: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    registries = load_registries()
    assert registries.mixers.provenance("retention").distribution == "cald-retnet-mixer"
    teacher = make_teacher(case)
    student, report = convert(teacher, registries.mixers.get("retention"), {}, max_length=40)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    assert student.config.mixer == "retention"

    inputs = make_inputs(case)
    output = student(**inputs)
    assert output.logits.shape == teacher(**inputs).logits.shape
    assert torch.isfinite(output.logits).all()

    student.save_pretrained(tmp_path / "student")
    again = CaldModel.from_pretrained(tmp_path / "student").double()
    torch.testing.assert_close(again(**inputs).logits, output.logits, rtol=0, atol=0)


@pytest.mark.parametrize("init", ["attention", "random"])
def test_the_init_option_decides_whether_the_teachers_projections_are_taken(
    init: str, make_teacher: Callable[..., CaldModel]
) -> None:
    from cald_retnet_mixer import RetentionMixer

    teacher = make_teacher("llama")
    retention = load_registries().mixers.get("retention")
    student, _ = convert(teacher, retention, {"init": init}, max_length=40)
    assert student.config.mixer_options["init"] == init
    first = teacher.family.attention_slots(teacher.backbone)[0]
    expected = teacher.family.projections(first).query.weight
    mixer = next(module for module in student.modules() if isinstance(module, RetentionMixer))
    assert torch.equal(mixer.query.weight, expected) == (init == "attention")
