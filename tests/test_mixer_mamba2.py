"""The mamba2 mixer and its chunked SSD scan, against a step-by-step recurrence written here."""

from __future__ import annotations

import pytest
import torch
from cald_mixers.mamba2 import Mamba2Mixer, Mamba2Options
from cald_mixers.ssd import decay_between
from cald_testing.mixers import context, padded_batch, small_mamba2
from pydantic import ValidationError

from cald_framework.errors import SpecError


def test_decay_between_sums_the_log_decays_after_the_start_up_to_the_end():
    log_decay = torch.tensor([-0.5, -1.0, -2.0], dtype=torch.float64)
    expected = torch.tensor(
        [[1, 0, 0], [torch.e**-1.0, 1, 0], [torch.e**-3.0, torch.e**-2.0, 1]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(decay_between(log_decay), expected)


def test_transformers_mamba2_mixer_loads_the_same_weights_and_agrees():
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMamba2Mixer

    mixer = small_mamba2()
    config = Mamba2Config(
        hidden_size=8,
        state_size=4,
        expand=2,
        head_dim=4,
        num_heads=4,
        n_groups=2,
        conv_kernel=3,
        chunk_size=4,
        layer_norm_epsilon=1e-5,
        num_hidden_layers=1,
    )
    theirs = HFMamba2Mixer(config, layer_idx=0).double().eval()
    theirs.load_state_dict(mixer.state_dict())
    hidden, _ = padded_batch([11, 11], 8)
    # transformers runs parts of its scan in float32
    torch.testing.assert_close(mixer(hidden, None), theirs(hidden), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_the_chunk_size_does_not_change_the_result(chunk_size):
    hidden, _ = padded_batch([10, 10], 8)
    reference = small_mamba2()(hidden, None)
    torch.testing.assert_close(small_mamba2(chunk_size=chunk_size)(hidden, None), reference)


def test_shapes_follow_mamba2s_layout():
    mixer = Mamba2Mixer(Mamba2Options(ngroups=2), context(64, 4, causal=True))
    shapes = {name: tuple(p.shape) for name, p in mixer.named_parameters()}
    # 128 inner channels in 2 heads of 64; conv over x | B | C = 128 + 2 * 2 * 128
    assert shapes == {
        "in_proj.weight": (128 + 640 + 2, 64),
        "conv1d.weight": (640, 1, 4),
        "conv1d.bias": (640,),
        "dt_bias": (2,),
        "A_log": (2,),
        "D": (2,),
        "norm.weight": (128,),
        "out_proj.weight": (64, 128),
    }


def test_initialisation_is_mamba2s():
    torch.manual_seed(0)
    options = Mamba2Options(headdim=4, A_init_range=(2.0, 3.0), dt_min=0.01, dt_max=0.02)
    mixer = Mamba2Mixer(options, context(64, 4, causal=True))
    A = mixer.A_log.exp()
    assert A.min() >= 2.0 and A.max() <= 3.0
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.02 * (1 + 1e-5)
    torch.testing.assert_close(mixer.D, torch.ones(32))
    torch.testing.assert_close(mixer.norm.weight, torch.ones(128))


def test_headdim_must_divide_the_inner_width():
    with pytest.raises(SpecError, match=r"headdim 64 must divide expand \* d_model = 2 \* 48 = 96"):
        Mamba2Mixer(Mamba2Options(), context(48, 4, causal=True))


def test_ngroups_must_divide_the_heads():
    with pytest.raises(SpecError, match=r"ngroups 4 must divide the number of heads .* = 6\)"):
        Mamba2Mixer(Mamba2Options(headdim=8, ngroups=4), context(24, 4, causal=True))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"headdim": 0}, "headdim"),
        ({"ngroups": 0}, "ngroups"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"A_init_range": (0.0, 4.0)}, r"A_init_range must satisfy 0 < low <= high"),
        ({"A_init_range": (5.0, 4.0)}, r"A_init_range must satisfy 0 < low <= high"),
        ({"dt_max": 0.0001}, r"dt_min \(0.001\) must not exceed dt_max"),
        ({"nheads": 4}, "nheads"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValidationError, match=message):
        Mamba2Options(**options)
