"""The linformer mixer in the paper's formulation (``init = "random"``): exactness against
softmax attention, padding, sharing, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from cald_mixers.linformer import LinformerMixer, LinformerOptions
from cald_testing.mixers import (
    assert_padding_is_invisible,
    context,
    padded_batch,
    softmax_attention,
)
from pydantic import ValidationError
from torch import nn

from cald_framework.contracts import AttentionProjections
from cald_framework.errors import DataError, SpecError


def paper_options(**values: object) -> LinformerOptions:
    """The paper's Linformer options (random E and F, its projection) with ``values``."""
    return LinformerOptions(init="random", **values)


def _projections(width: int, output: bool, seed: int = 0) -> AttentionProjections:
    torch.manual_seed(seed)
    linears = [nn.Linear(width, width).double() for _ in range(4)]
    return AttentionProjections(*linears[:3], output=linears[3] if output else None)


@pytest.mark.parametrize("output", [True, False])
def test_identity_projections_give_exactly_softmax_attention(output):
    time, width, heads = 7, 12, 3
    teacher = _projections(width, output)
    mixer = LinformerMixer(
        paper_options(k=time), context(width, heads, max_length=time, projections=teacher)
    ).double()
    with torch.no_grad():
        for projection in (mixer.key_projection, mixer.value_projection):
            projection.weight.copy_(math.sqrt(time) * torch.eye(time, dtype=torch.float64))
    hidden, _ = padded_batch([time, time], width)
    torch.testing.assert_close(
        mixer(hidden, None), softmax_attention(hidden, teacher, heads), rtol=0, atol=1e-12
    )


def test_the_projection_uses_only_valid_rows_scaled_by_their_count():
    mixer = LinformerMixer(paper_options(k=3), context(4, 1, max_length=6)).double()
    states, mask = padded_batch([6, 4], 4)
    projected = mixer.key_projection(states, mask)
    E = mixer.key_projection.weight
    torch.testing.assert_close(projected[1], E[:4].T @ states[1, :4] / 2)
    torch.testing.assert_close(projected[0], E.T @ states[0] / math.sqrt(6))


def test_a_padded_batch_gives_each_sequence_its_own_output():
    mixer = LinformerMixer(paper_options(k=5), context(8, 2, max_length=9)).double()
    assert_padding_is_invisible(mixer, *padded_batch([9, 4, 1], 8))


def test_the_teachers_projections_are_copied_not_shared():
    teacher = _projections(8, output=False)
    mixer = LinformerMixer(paper_options(k=4), context(8, 2, projections=teacher))
    assert mixer.output is None
    torch.testing.assert_close(mixer.query.weight, teacher.query.weight)
    assert mixer.query.weight is not teacher.query.weight
    assert mixer.query.weight.data_ptr() != teacher.query.weight.data_ptr()


def test_without_projections_fresh_layers_of_the_same_shape_are_built():
    mixer = LinformerMixer(paper_options(k=4), context(8, 2))
    shapes = {name: tuple(p.shape) for name, p in mixer.named_parameters()}
    assert shapes == {
        **{f"{role}.weight": (8, 8) for role in ("query", "key", "value", "output")},
        **{f"{role}.bias": (8,) for role in ("query", "key", "value", "output")},
        "key_projection.weight": (16, 4),
        "value_projection.weight": (16, 4),
    }


def test_without_projections_no_output_is_built_where_the_slot_had_none():
    mixer = LinformerMixer(paper_options(k=4), context(8, 2, output_projection=False))
    assert mixer.output is None


def test_sequence_projections_start_standard_normal():
    torch.manual_seed(0)
    mixer = LinformerMixer(paper_options(k=256), context(8, 2, max_length=512))
    weight = mixer.key_projection.weight
    assert abs(weight.mean().item()) < 0.01
    assert abs(weight.std().item() - 1) < 0.01


def test_share_kv_uses_one_matrix_for_keys_and_values_stored_once():
    mixer = LinformerMixer(paper_options(k=4, share="kv"), context(8, 2))
    assert mixer.key_projection.weight is mixer.value_projection.weight
    names = list(mixer.state_dict())
    assert "key_projection.weight" in names
    assert not any(name.startswith("value_projection") for name in names)


def test_share_layer_puts_one_projection_in_the_shared_dict_for_all_layers():
    model = nn.Module()
    model.shared = nn.ModuleDict()
    model.layers = nn.ModuleList(
        LinformerMixer(
            paper_options(k=4, share="layer"),
            context(8, 2, layer_index=index, num_layers=3, shared=model.shared),
        )
        for index in range(3)
    )
    weights = {
        id(p)
        for layer in model.layers
        for p in (layer.key_projection.weight, layer.value_projection.weight)
    }
    assert weights == {id(model.shared["linformer"].weight)}
    names = list(model.state_dict())
    assert len(names) == len(set(names))
    assert "shared.linformer.weight" in names
    assert not [name for name in names if "_projection" in name]
    assert len(list(model.parameters())) == 1 + 3 * 8


def test_share_layer_refuses_a_shared_projection_of_another_shape():
    shared = nn.ModuleDict()
    LinformerMixer(paper_options(k=4, share="layer"), context(8, 2, shared=shared))
    with pytest.raises(SpecError, match=r"layer 1 needs \(16, 5\) \(max_length, k\)"):
        LinformerMixer(
            paper_options(k=5, share="layer"), context(8, 2, layer_index=1, shared=shared)
        )


def test_a_sequence_longer_than_max_length_is_refused_by_name():
    mixer = LinformerMixer(paper_options(k=4), context(8, 2, max_length=5))
    with pytest.raises(DataError, match="sequence of length 6 is longer than max_length 5"):
        mixer(torch.randn(1, 6, 8), None)


def test_heads_must_divide_the_width():
    with pytest.raises(SpecError, match="num_heads 3 must divide d_model 8"):
        LinformerMixer(paper_options(), context(8, 3))


def test_an_unknown_max_length_is_refused():
    with pytest.raises(SpecError, match="got max_length 0"):
        LinformerMixer(paper_options(), context(8, 2, max_length=0))


def test_teacher_projections_of_another_width_are_refused():
    teacher = AttentionProjections(nn.Linear(8, 8), nn.Linear(8, 6), nn.Linear(8, 8))
    with pytest.raises(SpecError, match="key projection maps 8 -> 6 features, expected 8 -> 8"):
        LinformerMixer(paper_options(), context(8, 2, projections=teacher))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"k": 0}, "k"),
        ({"share": "heads"}, "share"),
        ({"dropout": 1.0}, "dropout"),
        ({"rank": 4}, "rank"),
    ],
)
def test_bad_options_are_refused_by_name(options, field):
    with pytest.raises(ValidationError, match=field):
        paper_options(**options)


def test_dropout_acts_in_training_only():
    mixer = LinformerMixer(paper_options(k=4, dropout=0.5), context(8, 2)).double()
    hidden, _ = padded_batch([6], 8)
    mixer.eval()
    torch.testing.assert_close(mixer(hidden, None), mixer(hidden, None))
    mixer.train()
    assert not torch.allclose(mixer(hidden, None), mixer(hidden, None))
