"""Layer-local alignment on tiny converted models: the errors it measures and what it trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cald_testing.models import TINY_MODELS

from cald_framework import cli
from cald_framework.conversion import convert
from cald_framework.engine.alignment import (
    Aligner,
    layer_pairs,
    masked_errors,
    residuals,
    teacher_forced,
)
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.spec.sections import TrainingSection
from cald_framework.testing.toy_plugins import TOY_SPEC

#: (case, mixer, options): a Linformer student of a BERT and a Mamba student of a GPT-NeoX, both
#: from random mixer weights, which alignment has something to learn for
STUDENTS = [
    ("bert", "linformer", {"k": 8, "init": "random"}),
    ("gpt-neox", "mamba", {"d_state": 4}),
]

Inputs = Callable[..., dict[str, torch.Tensor]]


def _pair(case: str, mixer: str, options: dict) -> tuple[CaldModel, CaldModel]:
    source, config, head = TINY_MODELS[case]
    torch.manual_seed(0)
    teacher = CaldModel.from_source_config(source, config, head, max_length=40).double().eval()
    plugin = load_registries().mixers.get(mixer)
    student, _ = convert(teacher, plugin, options, max_length=40)
    return teacher, student


def _align(case: str, teacher: CaldModel, student: CaldModel, make_inputs: Inputs, steps: int) -> None:
    """``steps`` alignment steps on four training batches, none of them held out."""
    aligner = Aligner(teacher, layer_pairs(teacher, student), TrainingSection(lr=1e-2), lr=1e-2)
    for step in range(steps):
        aligner.step(make_inputs(case, seed=10 + step % 4))


@pytest.mark.parametrize(("case", "mixer", "options"), STUDENTS)
def test_alignment_lowers_every_layers_residual(case, mixer, options, make_inputs: Inputs) -> None:
    teacher, student = _pair(case, mixer, options)
    pairs = layer_pairs(teacher, student)
    assert [pair.layer_index for pair in pairs] == [0, 1]
    held_out = [make_inputs(case, seed=1), make_inputs(case, seed=2)]
    before = residuals(teacher, pairs, held_out)
    _align(case, teacher, student, make_inputs, steps=40)
    after = residuals(teacher, pairs, held_out)
    assert all(new < 0.7 * old for new, old in zip(after, before)), (before, after)


@pytest.mark.parametrize(("case", "mixer", "options"), STUDENTS)
def test_only_the_mixers_change(case, mixer, options, make_inputs: Inputs) -> None:
    teacher, student = _pair(case, mixer, options)
    teacher_before = {name: value.clone() for name, value in teacher.state_dict().items()}
    before = {name: value.clone() for name, value in student.state_dict().items()}
    _align(case, teacher, student, make_inputs, steps=3)
    after = student.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    frozen = {name for name in before if ".mixer." not in name}
    assert changed and not changed & frozen
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    assert all(torch.equal(value, teacher.state_dict()[name]) for name, value in teacher_before.items())


def test_the_error_ignores_padded_positions() -> None:
    generator = torch.Generator().manual_seed(0)
    mixed, attention = torch.randn(2, 2, 5, 3, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    errors = masked_errors(mixed, attention, mask)
    valid = [(row, position) for row in range(2) for position in range(5) if mask[row, position]]
    squared = sum(float(((mixed[r, p] - attention[r, p]) ** 2).sum()) for r, p in valid)
    norm = sum(float((attention[r, p] ** 2).sum()) for r, p in valid)
    assert float(errors.error) == pytest.approx(squared, rel=1e-12)
    assert float(errors.relative) == pytest.approx(squared / norm, rel=1e-12)
    garbage = mixed.clone()
    garbage[1, 2:] = 1e6
    assert torch.equal(masked_errors(garbage, attention, mask).error, errors.error)


def test_padded_rows_score_as_if_alone(make_inputs: Inputs) -> None:
    teacher, student = _pair("bert", "linformer", {"k": 8})
    pairs = layer_pairs(teacher, student)
    inputs = make_inputs("bert")
    length = int(inputs["attention_mask"][1].sum())
    with torch.no_grad():
        batch = teacher_forced(teacher, pairs, inputs)
        rows = [
            teacher_forced(teacher, pairs, {name: value[:1] for name, value in inputs.items()}),
            teacher_forced(teacher, pairs, {name: value[1:, :length] for name, value in inputs.items()}),
        ]
    for layer, errors in enumerate(batch):
        alone = sum(float(row[layer].error) for row in rows)
        assert float(errors.error) == pytest.approx(alone, rel=1e-9)


def test_negative_align_steps_is_one_line(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (toy_spec_dir / "spec.toml").write_text(
        TOY_SPEC.replace("alpha_ld = 1.0", "alpha_ld = 1.0\nalign_steps = -1")
    )
    assert cli.main(["validate", "spec.toml"]) == 2
    assert capsys.readouterr().err == (
        "error: spec.toml:24: guidance.align_steps: Input should be greater than or equal to 0 "
        "(got -1)\n"
    )


def test_a_hybrid_student_aligns_only_its_converted_layers(make_inputs: Inputs) -> None:
    source, config, head = TINY_MODELS["bert"]
    torch.manual_seed(0)
    teacher = CaldModel.from_source_config(source, config, head, max_length=40).double().eval()
    plugin = load_registries().mixers.get("linformer")
    student, _ = convert(teacher, plugin, {"k": 8}, max_length=40, keep_attention=[0])
    pairs = layer_pairs(teacher, student)
    assert [pair.layer_index for pair in pairs] == [1]
    before = {name: value.clone() for name, value in student.state_dict().items()}
    _align("bert", teacher, student, make_inputs, steps=3)
    after = student.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".layer.1." in name and ".mixer." in name for name in changed), changed
