"""The built-in mixers wired into the built-in families, all looked up by name in the registries."""

from __future__ import annotations

import math

import pytest
import torch
from cald_testing.models import TINY_MODELS

from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

SMALL_SSM = {"d_state": 8, "headdim": 8, "chunk_size": 4}

#: (case, mixer, options): the paper's three scenarios and a few neighbours
SCENARIOS = [
    ("bert", "linformer", {"k": 8, "share": "layer"}),
    ("roberta", "linformer", {"k": 8, "share": "kv"}),
    ("gpt-neox", "mamba", {"d_state": 4}),
    ("llama", "mamba2", SMALL_SSM),
    ("wav2vec2-stable", "bimamba2", SMALL_SSM),
    ("hubert", "bimamba2", SMALL_SSM),
    ("wavlm", "bimamba2", SMALL_SSM),
]


def _teacher(case: str) -> CaldModel:
    source, config, head = TINY_MODELS[case]
    torch.manual_seed(0)
    return CaldModel.from_source_config(source, config, head, max_length=40).double().eval()


def _student(case: str, mixer: str, options: dict) -> CaldModel:
    plugin = load_registries().mixers.get(mixer)
    student, report = convert(_teacher(case), plugin, options, max_length=40)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    assert report.new and report.dropped
    return student.eval()


def _first_row_alone(inputs: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    return {name: tensor[1:, :length] for name, tensor in inputs.items()}


@pytest.mark.parametrize(("case", "mixer", "options"), SCENARIOS)
def test_padding_never_reaches_the_valid_positions_of_a_converted_model(
    case, mixer, options, make_inputs
):
    student, inputs = _student(case, mixer, options), make_inputs(case)
    valid_samples = int(inputs["attention_mask"][1].sum())
    padded = student(**inputs)
    alone = student(**_first_row_alone(inputs, valid_samples))
    frames = int(padded.hidden_mask[1].sum())
    assert alone.hidden_mask.shape[1] == frames and alone.hidden_mask.all()
    for with_padding, without in zip(padded.hidden_states, alone.hidden_states, strict=True):
        torch.testing.assert_close(with_padding[1, :frames], without[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize(("case", "mixer", "options"), SCENARIOS)
def test_a_converted_model_reloads_by_plugin_names_alone(
    case, mixer, options, make_inputs, tmp_path
):
    student = _student(case, mixer, options).float()
    student.save_pretrained(tmp_path)
    reloaded = CaldModel.from_pretrained(tmp_path)
    inputs = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in make_inputs(case).items()
    }
    expected, got = student(**inputs), reloaded(**inputs)
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=0)
    assert reloaded.config.mixer_options == student.config.mixer_options


def test_linformer_with_identity_projections_reproduces_the_bert_teacher(make_inputs):
    """E = F = sqrt(n)·I with k = n: the paper's identity check, through the whole model."""
    teacher = _teacher("bert")
    inputs = {name: tensor[:1] for name, tensor in make_inputs("bert").items()}
    length = inputs["input_ids"].shape[1]
    linformer = load_registries().mixers.get("linformer")
    student, _ = convert(
        teacher, linformer, {"k": length, "share": "none", "init": "random"}, max_length=length
    )
    with torch.no_grad():
        for layer in student.backbone.encoder.layer:
            mixer = layer.attention.self.mixer
            for projection in (mixer.key_projection, mixer.value_projection):
                projection.weight.copy_(math.sqrt(length) * torch.eye(length))
    expected, got = teacher(**inputs), student.eval()(**inputs)
    torch.testing.assert_close(
        got.hidden_states[-1], expected.hidden_states[-1], rtol=0, atol=1e-10
    )
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-10)
