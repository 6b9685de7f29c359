"""The bimamba2 mixer: two Mamba2 directions, the backward one over each valid prefix."""

from __future__ import annotations

import pytest
import torch
from cald_mixers.bimamba2 import BiMamba2Mixer, BiMamba2Options
from cald_mixers.padding import reverse_valid_prefix
from cald_testing.mixers import assert_padding_is_invisible, context, padded_batch

from cald_framework.errors import SpecError

SMALL = {"d_state": 4, "headdim": 4, "chunk_size": 4, "d_conv": 3}
LENGTHS = [9, 4, 6]


def _bimamba2(seed: int = 0, **options) -> BiMamba2Mixer:
    torch.manual_seed(seed)
    return BiMamba2Mixer(BiMamba2Options(**{**SMALL, **options}), context(8, 2)).double()


def test_reversing_the_valid_prefix_keeps_padding_in_place_and_undoes_itself():
    states = torch.arange(8.0).view(2, 4, 1).expand(2, 4, 3)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    reversed_states = reverse_valid_prefix(states, mask)
    assert reversed_states[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    torch.testing.assert_close(reverse_valid_prefix(reversed_states, mask), states)
    torch.testing.assert_close(reverse_valid_prefix(states, None), states.flip(1))


def test_the_backward_direction_equals_the_reversed_unpadded_sequences():
    mixer = _bimamba2()
    hidden, mask = padded_batch(LENGTHS, 8)
    backward = mixer.backward_output(hidden, mask)
    for row, length in enumerate(LENGTHS):
        alone = hidden[row : row + 1, :length].flip(1)
        expected = mixer.backward_mamba(alone, None).flip(1)[0]
        torch.testing.assert_close(backward[row, :length], expected, rtol=0, atol=1e-12)


def test_the_output_is_the_sum_of_both_directions_without_a_residual():
    mixer = _bimamba2()
    hidden, _ = padded_batch([7], 8)
    expected = mixer.forward_mamba(hidden, None) + mixer.backward_mamba(hidden.flip(1), None).flip(
        1
    )
    torch.testing.assert_close(mixer(hidden, None), expected, rtol=0, atol=1e-12)


def test_a_padded_batch_gives_each_sequence_its_own_output():
    assert_padding_is_invisible(_bimamba2(bias=True), *padded_batch(LENGTHS, 8))


def test_every_output_sees_the_whole_sequence():
    mixer = _bimamba2()
    hidden, _ = padded_batch([6], 8)
    changed = hidden.clone()
    changed[:, -1] += 1.0
    difference = (mixer(changed, None) - mixer(hidden, None))[0].abs().sum(-1)
    assert (difference > 1e-8).all()


def test_each_direction_defaults_to_expand_one_with_its_own_weights():
    mixer = BiMamba2Mixer(BiMamba2Options(), context(128, 2))
    assert mixer.forward_mamba.out_proj.in_features == 128
    assert mixer.forward_mamba.D.shape == (2,)  # 128 channels in heads of 64
    forward_params = {id(p) for p in mixer.forward_mamba.parameters()}
    assert forward_params.isdisjoint(id(p) for p in mixer.backward_mamba.parameters())
    assert BiMamba2Options().d_state == 128 and BiMamba2Options().chunk_size == 256


def test_shape_errors_name_the_mixer():
    with pytest.raises(SpecError, match=r"bimamba2: headdim 64 must divide expand \* d_model"):
        BiMamba2Mixer(BiMamba2Options(), context(96, 2))
