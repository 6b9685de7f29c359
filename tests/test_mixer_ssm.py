"""What Mamba and Mamba2 share: naive-recurrence equality under padding, causality, the
recurrent step, and finite float32 results when decays are extreme."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from cald_testing.mixers import (
    assert_causal,
    assert_float32_is_finite_and_close,
    assert_matches_reference,
    assert_padding_is_invisible,
    assert_steps_match_forward,
    mamba2_reference,
    mamba_reference,
    padded_batch,
    small_mamba,
    small_mamba2,
)

from cald_framework.contracts import no_weight_decay_names

#: name -> (factory, naive reference, name of the time-step bias)
CASES = {
    "mamba": (small_mamba, mamba_reference, "dt_proj.bias"),
    "mamba2": (small_mamba2, mamba2_reference, "dt_bias"),
}
pytestmark = pytest.mark.parametrize("case", sorted(CASES))


@pytest.mark.parametrize("bias", [False, True])
def test_padded_forward_equals_the_naive_recurrence_on_valid_positions(case, bias):
    factory, reference, _ = CASES[case]
    assert_matches_reference(factory(bias=bias), reference, [11, 6, 1])


def test_a_padded_batch_gives_each_sequence_its_own_output(case):
    factory, _, _ = CASES[case]
    assert_padding_is_invisible(factory(bias=True), *padded_batch([10, 3, 7], 8))


def test_future_tokens_never_change_past_outputs(case):
    factory, _, _ = CASES[case]
    assert_causal(factory(), padded_batch([9, 9], 8)[0], cut=4)


def test_the_recurrent_step_equals_the_parallel_forward(case):
    factory, _, _ = CASES[case]
    assert_steps_match_forward(factory(d_conv=4), padded_batch([9, 9], 8)[0])


def test_extreme_decays_stay_finite_and_match_float64(case):
    factory, _, time_step_bias = CASES[case]
    mixer = factory()
    with torch.no_grad():
        # time steps of about 30 and rates of about 20: log-decays near -600 per step
        mixer.get_parameter(time_step_bias).fill_(30.0)
        mixer.A_log.fill_(3.0)
    assert_float32_is_finite_and_close(mixer)


def test_gradients_reach_every_parameter(case):
    factory, _, _ = CASES[case]
    mixer = factory(bias=True)
    hidden, mask = padded_batch([7, 5], 8)
    mixer(hidden, mask).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mixer.parameters())


def test_no_weight_decay_tags_survive_copies_conversions_and_pickling(case):
    factory, _, _ = CASES[case]
    mixer = factory()
    tagged = no_weight_decay_names(mixer)
    assert tagged == {"A_log", "D", CASES[case][2]}
    assert no_weight_decay_names(copy.deepcopy(mixer)) == tagged
    assert no_weight_decay_names(mixer.to(torch.bfloat16)) == tagged
    buffer = io.BytesIO()
    torch.save(mixer, buffer)
    buffer.seek(0)
    assert no_weight_decay_names(torch.load(buffer, weights_only=False)) == tagged
