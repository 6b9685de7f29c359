"""The mamba mixer and its parallel scan, against a step-by-step recurrence written here."""

from __future__ import annotations

import math

import pytest
import torch
from cald_mixers.mamba import MambaMixer, MambaOptions
from cald_mixers.scan import BLOCK_ELEMENTS, selective_scan
from cald_testing.mixers import context, padded_batch, small_mamba
from pydantic import ValidationError


def _scan_inputs(time: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(time)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    x, delta, A = draw(2, time, 3), draw(2, time, 3).exp(), -draw(3, 4).exp()
    return x, delta, A, draw(2, time, 4), draw(2, time, 4)


@pytest.mark.parametrize("time", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("budget", [1, 40, BLOCK_ELEMENTS])
def test_the_scan_equals_the_sequential_recurrence(time, budget):
    x, delta, A, B, C = _scan_inputs(time)
    state, expected = torch.zeros(2, 3, 4, dtype=torch.float64), []
    for t in range(time):
        state = torch.exp(delta[:, t, :, None] * A) * state
        state = state + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        expected.append((state * C[:, t, None, :]).sum(-1))
    torch.testing.assert_close(selective_scan(x, delta, A, B, C, budget), torch.stack(expected, 1))


@pytest.mark.parametrize(("time", "budget"), [(1, 1), (7, 1), (8, 40), (13, BLOCK_ELEMENTS)])
def test_the_scan_gradients_are_exact(time, budget):
    inputs = [t.requires_grad_() for t in _scan_inputs(time)]
    assert torch.autograd.gradcheck(lambda *t: selective_scan(*t, budget=budget), inputs)


def test_transformers_mamba_mixer_loads_the_same_weights_and_agrees():
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMambaMixer

    mixer = small_mamba()
    config = MambaConfig(
        hidden_size=8,
        state_size=4,
        expand=2,
        conv_kernel=3,
        time_step_rank=mixer.dt_rank,
        num_hidden_layers=1,
    )
    theirs = HFMambaMixer(config, layer_idx=0).double().eval()
    theirs.load_state_dict(mixer.state_dict())
    hidden, _ = padded_batch([9, 9], 8)
    torch.testing.assert_close(mixer(hidden, None), theirs(hidden), atol=1e-9, rtol=0)


def test_shapes_follow_mambas_layout_and_dt_rank_defaults_to_a_sixteenth():
    mixer = MambaMixer(MambaOptions(), context(40, 4, causal=True))
    assert mixer.dt_rank == math.ceil(40 / 16) == 3
    shapes = {name: tuple(p.shape) for name, p in mixer.named_parameters()}
    assert shapes == {
        "in_proj.weight": (160, 40),
        "conv1d.weight": (80, 1, 4),
        "conv1d.bias": (80,),
        "x_proj.weight": (3 + 2 * 16, 80),
        "dt_proj.weight": (80, 3),
        "dt_proj.bias": (80,),
        "out_proj.weight": (40, 80),
        "A_log": (80, 16),
        "D": (80,),
    }
    explicit = MambaMixer(MambaOptions(dt_rank=7), context(40, 4, causal=True))
    assert explicit.dt_proj.weight.shape == (80, 7)


def test_initialisation_is_mambas():
    torch.manual_seed(0)
    options = MambaOptions(dt_min=0.01, dt_max=0.05)
    mixer = MambaMixer(options, context(64, 4, causal=True))
    torch.testing.assert_close(mixer.A_log.exp()[5], torch.arange(1.0, 17.0))
    torch.testing.assert_close(mixer.D, torch.ones(128))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    bound = 4**-0.5
    assert mixer.dt_proj.weight.abs().max() <= bound


def test_the_time_step_floor_applies():
    mixer = MambaMixer(
        MambaOptions(dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-3), context(16, 2, causal=True)
    )
    torch.testing.assert_close(
        torch.nn.functional.softplus(mixer.dt_proj.bias), torch.full((32,), 1e-3)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"d_state": 0}, "d_state"),
        ({"expand": 0}, "expand"),
        ({"d_conv": -1}, "d_conv"),
        ({"dt_rank": 0}, "dt_rank"),
        ({"dt_min": 0.2}, r"dt_min \(0.2\) must not exceed dt_max \(0.1\)"),
        ({"dt_init_floor": 0}, "dt_init_floor"),
        ({"state_size": 8}, "state_size"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValidationError, match=message):
        MambaOptions(**options)
