"""Registration of the built-in mixers and what every one of them promises the host."""

from __future__ import annotations

import pytest
import torch
from cald_mixers.plugin import cald_register_mixers
from cald_testing.mixers import assert_causal, context, padded_batch

from cald_framework.contracts import MixerPlugin, RecurrentMixer, SequenceMixer

DIRECTIONS = {
    "linformer": "bidirectional",
    "mamba": "causal",
    "mamba2": "causal",
    "bimamba2": "bidirectional",
}
#: small but valid options for a width of 16 with 2 heads
SMALL = {
    "linformer": {"k": 4},
    "mamba": {"d_state": 4},
    "mamba2": {"d_state": 4, "headdim": 8, "chunk_size": 4},
    "bimamba2": {"d_state": 4, "headdim": 8, "chunk_size": 4},
}


def _plugins() -> dict[str, MixerPlugin]:
    found: list[MixerPlugin] = []
    cald_register_mixers(register=found.append)
    return {plugin.name: plugin for plugin in found}


def _build(name: str) -> torch.nn.Module:
    plugin = _plugins()[name]
    torch.manual_seed(0)
    ctx = context(16, 2, max_length=12, causal=plugin.direction == "causal")
    return plugin.build(plugin.options(**SMALL[name]), ctx).double()


def test_the_hook_registers_the_four_mixers_with_their_directions():
    plugins = _plugins()
    assert {name: plugin.direction for name, plugin in plugins.items()} == DIRECTIONS
    assert all(plugin.description for plugin in plugins.values())


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_default_options_validate_and_build_at_a_typical_width(name):
    plugin = _plugins()[name]
    mixer = plugin.build(plugin.options(), context(256, 4, max_length=64))
    hidden = torch.randn(2, 5, 256)
    assert mixer(hidden, None).shape == (2, 5, 256)
    assert isinstance(mixer, SequenceMixer)


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_valid_outputs_ignore_padding_and_gradients_flow(name):
    mixer = _build(name)
    hidden, mask = padded_batch([12, 7], 16)
    out = mixer(hidden, mask)
    alone = mixer(hidden[1:, :7], None)
    torch.testing.assert_close(out[1, :7], alone[0], rtol=0, atol=1e-10)
    out[mask].sum().backward()
    assert all(p.grad is not None for p in mixer.parameters())


@pytest.mark.parametrize("name", [n for n, d in DIRECTIONS.items() if d == "causal"])
def test_causal_mixers_are_causal_and_recurrent(name):
    mixer = _build(name)
    assert isinstance(mixer, RecurrentMixer)
    assert_causal(mixer, padded_batch([10], 16)[0], cut=6)
