"""Hidden-state extractors: layer selection and the parameter-free LayerNorm."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from cald_extractors.extractors import HiddenStateOptions, LayerNormOptions
from cald_extractors.plugin import cald_register_extractors
from cald_framework.contracts import CaldOutput, ExtractorPlugin
from cald_framework.errors import CaldError


@pytest.fixture(scope="module")
def extractors() -> dict[str, ExtractorPlugin]:
    found: list[ExtractorPlugin] = []
    cald_register_extractors(register=found.append)
    return {plugin.name: plugin for plugin in found}


def _output(layers: int = 3) -> CaldOutput:
    generator = torch.Generator().manual_seed(0)
    states = tuple(
        torch.randn(2, 5, 4, generator=generator, dtype=torch.float64) * (index + 1) + index
        for index in range(layers + 1)
    )
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    return CaldOutput(logits=torch.zeros(2, 3), hidden_states=states, hidden_mask=mask)


def _extract(extractors, name, output, **options):
    plugin = extractors[name]
    return plugin.build(plugin.options(**options))(output)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [1, 2, 3]),
        ({"skip_embeddings": False}, [0, 1, 2, 3]),
        ({"skip_last": True}, [1, 2]),
        ({"skip_embeddings": False, "skip_last": True}, [0, 1, 2]),
        ({"layers": [3, 0]}, [3, 0]),
    ],
)
def test_hidden_states_selects_the_requested_layers(extractors, options, expected):
    output = _output()
    extracted = _extract(extractors, "hidden_states", output, **options)
    assert len(extracted.layers) == len(expected)
    for state, index in zip(extracted.layers, expected, strict=True):
        assert state is output.hidden_states[index]
    assert extracted.mask is output.hidden_mask


def test_layernorm_normalises_each_position_without_parameters(extractors):
    output = _output()
    extracted = _extract(extractors, "layernorm", output, layers=[2], eps=1e-3)
    state = output.hidden_states[2]
    mean = state.mean(-1, keepdim=True)
    variance = ((state - mean) ** 2).mean(-1, keepdim=True)
    expected = (state - mean) / torch.sqrt(variance + 1e-3)
    torch.testing.assert_close(extracted.layers[0], expected, rtol=0, atol=1e-12)
    assert extracted.mask is output.hidden_mask


def test_layernorm_uses_the_same_selection_as_hidden_states(extractors):
    output = _output()
    plain = _extract(extractors, "hidden_states", output, skip_last=True)
    normed = _extract(extractors, "layernorm", output, skip_last=True)
    assert len(normed.layers) == len(plain.layers) == 2
    for state, raw in zip(normed.layers, plain.layers, strict=True):
        torch.testing.assert_close(state, torch.nn.functional.layer_norm(raw, (4,)))


def test_layers_beyond_the_model_are_named(extractors):
    with pytest.raises(
        CaldError,
        match=r"^extractor layers \[4, 7\] out of range: the model has 4 hidden states "
        r"\(embeddings \+ 3 layers\)$",
    ):
        _extract(extractors, "hidden_states", _output(), layers=[1, 4, 7])


def test_a_selection_of_nothing_is_refused(extractors):
    with pytest.raises(CaldError, match="^extractor options select no hidden state of 2$"):
        _extract(extractors, "hidden_states", _output(layers=1), skip_last=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": [1], "skip_last": True}, "give either 'layers' or skip_embeddings/skip_last"),
        ({"layers": [-1]}, r"layer indices must be >= 0, got \[-1\]"),
        ({"layers": []}, "at least 1 item"),
        ({"depth": 2}, "Extra inputs are not permitted"),
    ],
)
def test_option_mistakes_are_refused(options, message):
    with pytest.raises(ValidationError, match=message):
        HiddenStateOptions(**options)


def test_layernorm_eps_must_be_positive():
    with pytest.raises(ValidationError, match="greater than 0"):
        LayerNormOptions(eps=0)
