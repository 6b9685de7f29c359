"""Conversion: wiring mixers into every family, the transfer report, and init_from."""

from __future__ import annotations

import json

import pytest
import torch
from cald_testing.models import TINY_MODELS
from torch import nn

from cald_framework.conversion import ConversionError, convert, transfer_report
from cald_framework.errors import PluginError

#: cases whose attention an exact softmax mixer reproduces (WavLM adds relative position bias)
EXACT_CASES = sorted(set(TINY_MODELS) - {"wavlm"})

#: case -> the tensors of one attention slot, relative to the slot
ATTENTION_TENSORS = {
    "bert": ["query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias"],
    "gpt-neox": ["query_key_value.weight", "query_key_value.bias", "dense.weight", "dense.bias"],
    "llama": ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"],
    "wav2vec2": [
        f"{name}.{kind}"
        for name in ("k_proj", "v_proj", "q_proj", "out_proj")
        for kind in ("weight", "bias")
    ],
}

SLOT_PREFIXES = {
    "bert": "backbone.encoder.layer.{}.attention.self",
    "gpt-neox": "backbone.gpt_neox.layers.{}.attention",
    "llama": "backbone.model.layers.{}.self_attn",
    "wav2vec2": "backbone.encoder.layers.{}.attention",
}


def _identity_rotary(model: nn.Module) -> None:
    """Zero the rotary frequencies: every rotation becomes the identity."""
    for module in model.modules():
        for name in ("inv_freq", "original_inv_freq"):
            if isinstance(getattr(module, name, None), torch.Tensor):
                getattr(module, name).zero_()


@pytest.mark.parametrize("case", EXACT_CASES)
def test_a_mixer_that_reproduces_attention_gives_the_teachers_outputs(
    case, make_teacher, make_inputs, mixer_plugins
):
    teacher, inputs = make_teacher(case), make_inputs(case)
    _identity_rotary(teacher)
    student, _ = convert(teacher, mixer_plugins["exact-attention"], {}, max_length=40)
    expected, got = teacher(**inputs), student.eval()(**inputs)
    valid = expected.hidden_mask
    assert torch.equal(got.hidden_mask, valid)
    for theirs, ours in zip(expected.hidden_states, got.hidden_states, strict=True):
        torch.testing.assert_close(ours[valid], theirs[valid], rtol=0, atol=1e-10)
    logits_valid = valid if expected.logits.dim() == 3 else slice(None)
    torch.testing.assert_close(
        got.logits[logits_valid], expected.logits[logits_valid], rtol=0, atol=1e-10
    )


def test_with_rotary_in_place_a_causal_student_differs_from_its_teacher(
    make_teacher, make_inputs, mixer_plugins
):
    """The identity-rotary check above is not vacuous: rotary is really dropped."""
    teacher, inputs = make_teacher("llama"), make_inputs("llama")
    student, _ = convert(teacher, mixer_plugins["exact-attention"], {}, max_length=40)
    assert not torch.allclose(student(**inputs).logits, teacher(**inputs).logits)


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_every_mixer_receives_the_hidden_states_and_the_padding_mask(
    case, make_teacher, make_inputs, mixer_plugins
):
    student, _ = convert(make_teacher(case), mixer_plugins["cumulative-mean"], {}, max_length=40)
    inputs = make_inputs(case)
    output = student(**inputs)
    mixers = [module for module in student.modules() if hasattr(module, "calls")]
    assert len(mixers) == TINY_MODELS[case][1]["num_hidden_layers"]
    for mixer in mixers:
        [(shape, mask)] = mixer.calls
        assert shape == tuple(output.hidden_states[0].shape)
        assert torch.equal(mask, output.hidden_mask)
        assert not mask[1].all()
    unpadded = {name: tensor[:1] for name, tensor in inputs.items()}
    student(**unpadded)
    assert all(mixer.calls[-1][1] is None for mixer in mixers)


@pytest.mark.parametrize("case", ["bert", "gpt-neox", "llama", "wav2vec2"])
def test_the_transfer_report_accounts_for_every_tensor(case, make_teacher, mixer_plugins):
    teacher = make_teacher(case)
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    student, report = convert(teacher, mixer_plugins["cumulative-mean"], {}, max_length=40)
    after = student.state_dict()
    layers = TINY_MODELS[case][1]["num_hidden_layers"]
    slots = [SLOT_PREFIXES[case].format(index) for index in range(layers)]

    attention = ATTENTION_TENSORS[case]
    assert report.dropped == [f"{slot}.{name}" for slot in slots for name in attention]
    # a mixer holding the shared module lists it under its own name too (one tensor, many names)
    mixer_tensors = ("projection.weight", "projection.bias", "scale.weight")
    assert report.new == [f"{slot}.mixer.{name}" for slot in slots for name in mixer_tensors] + [
        "shared.scale.weight"
    ]
    assert report.copied == [name for name in before if name not in report.dropped]
    assert len(report.copied) + len(report.dropped) == len(before)
    assert len(report.copied) + len(report.new) == len(after)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    for name in report.copied:
        assert torch.equal(after[name], before[name]), name
    assert report.original_parameters == sum(p.numel() for p in teacher.parameters())
    assert report.student_parameters == sum(p.numel() for p in student.parameters())
    # the teacher keeps its attention and its weights
    assert teacher.config.mixer is None
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in before.items())


def test_the_report_names_the_mixer_tensors_taken_over_from_attention(make_teacher, mixer_plugins):
    _, report = convert(make_teacher("llama"), mixer_plugins["exact-attention"], {}, max_length=40)
    slot = "backbone.model.layers.0.self_attn"
    assert report.from_attention[f"{slot}.mixer.query.weight"] == f"{slot}.q_proj.weight"
    assert report.from_attention[f"{slot}.mixer.output.weight"] == f"{slot}.o_proj.weight"
    # grouped-query keys are expanded to one head per query head, so they are new values
    assert f"{slot}.mixer.key.weight" not in report.from_attention
    assert report.counts()["from_attention"] == 4


def test_tensors_lost_or_changed_outside_the_attention_are_caught(make_teacher, mixer_plugins):
    teacher = make_teacher("bert")
    student, _ = convert(teacher, mixer_plugins["exact-attention"], {}, max_length=40)
    slots = [SLOT_PREFIXES["bert"].format(index) for index in range(2)]
    student.backbone.embeddings.LayerNorm = nn.Identity()
    report = transfer_report(teacher, student, slots)
    assert report.unexpected_missing == [
        "backbone.embeddings.LayerNorm.weight",
        "backbone.embeddings.LayerNorm.bias",
    ]
    with torch.no_grad():
        student.head.classifier.bias[0] += 1
    with pytest.raises(ConversionError, match="^head.classifier.bias differs from the original"):
        transfer_report(teacher, student, slots)


def test_report_saves_as_json_atomically(tmp_path, make_teacher, mixer_plugins):
    _, report = convert(
        make_teacher("gpt-neox"), mixer_plugins["cumulative-mean"], {}, max_length=40
    )
    target = tmp_path / "reports" / "transfer.json"
    target.parent.mkdir()
    target.write_text("stale")
    report.save(target)
    saved = json.loads(target.read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["counts"]["dropped"] == 8 and saved["mixer"] == "cumulative-mean"
    assert [path.name for path in target.parent.iterdir()] == ["transfer.json"]


def test_init_from_starts_the_student_from_another_checkpoint(
    make_teacher, make_inputs, mixer_plugins
):
    teacher, source = make_teacher("bert", seed=0), make_teacher("bert", seed=1)
    source.config.source_model = "pretrained-source"
    student, report = convert(teacher, mixer_plugins["cumulative-mean"], {}, 40, init_from=source)
    weights, source_weights = student.state_dict(), source.state_dict()
    assert report.initialised_from == "pretrained-source"
    assert all(torch.equal(weights[name], source_weights[name]) for name in report.copied)
    name = "backbone.embeddings.word_embeddings.weight"
    assert not torch.equal(weights[name], teacher.state_dict()[name])


def test_init_from_must_match_the_teacher(make_teacher, source_plugins, mixer_plugins):
    from cald_framework.modeling import CaldModel

    source, config, head = TINY_MODELS["bert"]
    deeper = CaldModel.from_source_config(
        source, {**config, "num_hidden_layers": 3}, head, source=source_plugins[source]
    )
    message = "^init_from does not match the teacher: layers 3 != 2$"
    with pytest.raises(ConversionError, match=message):
        convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {}, 40, init_from=deeper)


def test_a_converted_model_is_not_converted_again(make_teacher, mixer_plugins):
    student, _ = convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {}, max_length=40)
    with pytest.raises(ConversionError, match="already has mixers \\('cumulative-mean'\\)"):
        convert(student, mixer_plugins["cumulative-mean"], {}, max_length=40)


def test_a_bidirectional_mixer_is_refused_for_a_causal_source(make_teacher, mixer_plugins):
    with pytest.raises(
        PluginError,
        match="^mixer 'bidirectional-mean' is bidirectional and cannot replace attention "
        "in the causal source 'gpt-neox'$",
    ):
        convert(make_teacher("gpt-neox"), mixer_plugins["bidirectional-mean"], {}, max_length=40)


def test_unknown_mixer_options_are_one_line_plugin_errors(make_teacher, mixer_plugins):
    with pytest.raises(
        PluginError, match=r"^rank: unknown key 'rank'; it takes no options \(mixer 'cumulative-mean'\)$"
    ):
        convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {"rank": 3}, max_length=40)


@pytest.mark.parametrize("case", ["bert", "wav2vec2"])
def test_converted_models_build_no_attention_masks(
    case, make_teacher, make_inputs, monkeypatch, mixer_plugins
):
    from transformers import masking_utils

    student, _ = convert(make_teacher(case), mixer_plugins["cumulative-mean"], {}, max_length=40)
    built = []

    def counting(original):
        def build(*args, **kwargs):
            built.append(original)
            return original(*args, **kwargs)

        return build

    mapping = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    for name in ("sdpa", "eager"):
        monkeypatch.setitem(mapping, name, counting(mapping[name]))
    make_teacher(case)(**make_inputs(case))
    assert built, "the teacher should build its mask through the patched functions"
    built.clear()
    student(**make_inputs(case))
    assert built == []
