"""The example third-party plugin in examples/cald-retnet-mixer (installed by `make install`)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from cald_framework.contracts import AttentionProjections, MixerPlugin, RecurrentMixer
from cald_framework.errors import SpecError

from cald_testing.mixers import (
    assert_causal,
    assert_padding_is_invisible,
    assert_steps_match_forward,
    context,
    padded_batch,
)

pytest.importorskip(
    "cald_retnet_mixer",
    reason="the example plugin is not installed: pip install -e examples/cald-retnet-mixer",
)

from cald_retnet_mixer import RetentionMixer, RetentionOptions  # noqa: E402
from cald_retnet_mixer.plugin import cald_register_mixers  # noqa: E402
from cald_retnet_mixer.retention import chunkwise_retention, head_decays  # noqa: E402


def _teacher(width: int, output: bool) -> AttentionProjections:
    linears = [nn.Linear(width, width).double() for _ in range(4)]
    return AttentionProjections(*linears[:3], output=linears[3] if output else None)


def _retention(output: bool = True, seed: int = 0, **options: object) -> RetentionMixer:
    torch.manual_seed(seed)
    ctx = context(8, 2, causal=True, projections=_teacher(8, output))
    return RetentionMixer(RetentionOptions(**{"chunk_size": 4, **options}), ctx).double()


def test_the_distribution_declares_its_entry_point():
    [entry] = [e for e in entry_points(group="cald_framework") if e.name == "retention"]
    assert entry.value == "cald_retnet_mixer.plugin"
    assert entry.dist is not None and entry.dist.name == "cald-retnet-mixer"


def test_the_hook_registers_one_causal_mixer():
    found: list[MixerPlugin] = []
    cald_register_mixers(register=found.append)
    [plugin] = found
    assert (plugin.name, plugin.direction, plugin.options) == (
        "retention",
        "causal",
        RetentionOptions,
    )


def test_head_decays_follow_retnet():
    torch.testing.assert_close(
        head_decays(3).exp(), torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7], dtype=torch.float64)
    )


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 16])
def test_the_chunkwise_form_equals_the_parallel_form(chunk_size):
    generator = torch.Generator().manual_seed(chunk_size)
    query, key, value = (
        torch.randn(2, 3, 10, 4, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    log_decay = head_decays(3) * 20  # faster decays than RetNet's, so all terms matter
    steps = torch.arange(10, dtype=torch.float64)
    gaps = steps[:, None] - steps[None, :]
    mask = torch.where(gaps >= 0, (gaps.clamp(min=0) * log_decay[:, None, None]).exp(), 0.0)
    parallel = ((query @ key.transpose(-1, -2)) * mask) @ value
    torch.testing.assert_close(
        chunkwise_retention(query, key, value, log_decay, chunk_size), parallel
    )


@pytest.mark.parametrize("output", [True, False])
@pytest.mark.parametrize("rotary", [True, False])
def test_the_recurrent_step_equals_the_chunkwise_forward(output, rotary):
    mixer = _retention(output=output, rotary=rotary)
    assert isinstance(mixer, RecurrentMixer)
    assert_steps_match_forward(mixer, padded_batch([11, 11], 8)[0])


def test_padding_never_leaks_into_valid_positions():
    assert_padding_is_invisible(_retention(), *padded_batch([10, 3, 7], 8))


def test_future_tokens_never_change_past_outputs():
    assert_causal(_retention(), padded_batch([9, 9], 8)[0], cut=5)


def test_the_chunk_size_does_not_change_the_result():
    hidden, _ = padded_batch([13, 13], 8)
    torch.testing.assert_close(
        _retention(chunk_size=5)(hidden, None), _retention(chunk_size=64)(hidden, None)
    )


def test_the_teachers_projections_are_copied_and_the_output_kept_only_where_it_was():
    teacher = _teacher(8, output=True)
    mixer = RetentionMixer(RetentionOptions(), context(8, 2, projections=teacher))
    torch.testing.assert_close(mixer.value.weight, teacher.value.weight)
    assert mixer.value.weight.data_ptr() != teacher.value.weight.data_ptr()
    assert mixer.output is not None
    without = RetentionMixer(RetentionOptions(), context(8, 2, projections=_teacher(8, False)))
    assert without.output is None


@pytest.mark.parametrize("output", [True, False])
def test_random_init_ignores_the_teacher_and_builds_fresh_layers_of_the_same_layout(output):
    teacher = _teacher(8, output=output)
    ctx = context(8, 2, projections=teacher, output_projection=output)
    copied = RetentionMixer(RetentionOptions(), ctx)
    fresh = RetentionMixer(RetentionOptions(init="random"), ctx)
    assert {n: p.shape for n, p in fresh.named_parameters()} == {
        n: p.shape for n, p in copied.named_parameters()
    }
    for role in ("query", "key", "value") + (("output",) if output else ()):
        weight = getattr(fresh, role).weight
        assert not torch.allclose(weight, getattr(teacher, role).weight.float()), role


@pytest.mark.parametrize("output_projection", [True, False])
def test_without_projections_the_output_is_built_where_the_slot_had_one(output_projection):
    mixer = RetentionMixer(RetentionOptions(), context(8, 2, output_projection=output_projection))
    assert (mixer.output is not None) == output_projection


def test_rotary_needs_an_even_head_dim():
    with pytest.raises(SpecError, match="rotary needs an even head_dim, got 3"):
        RetentionMixer(RetentionOptions(), context(6, 2))
    RetentionMixer(RetentionOptions(rotary=False), context(6, 2))


@pytest.mark.parametrize(
    "options", [{"chunk_size": 0}, {"rotary_base": 1.0}, {"decay": 0.9}, {"init": "source"}]
)
def test_bad_options_are_refused_by_name(options):
    [name] = options
    with pytest.raises(ValidationError, match=name):
        RetentionOptions(**options)
