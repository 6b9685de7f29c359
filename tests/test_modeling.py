"""CaldModel: heads, saving and reloading through the plugins, gradients, the padding state."""

from __future__ import annotations

import json

import pytest
import torch
from cald_testing.models import TINY_MODELS

from cald_framework.contracts import HeadSpec, PaddingState
from cald_framework.conversion import convert
from cald_framework.errors import CaldError, CheckpointError
from cald_framework.heads import MeanPoolClassifier, TokenClassifier, build_head
from cald_framework.modeling import CaldModel


def _assert_same_output(first, second):
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    for mine, theirs in zip(first.hidden_states, second.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert torch.equal(first.hidden_mask, second.hidden_mask)


def _reload(model, directory, source_plugins, mixer=None):
    model.save_pretrained(directory)
    source = source_plugins[model.config.source]
    return CaldModel.from_pretrained(directory, source=source, mixer=mixer)


@pytest.mark.parametrize("case", ["bert", "llama", "wav2vec2"])
def test_a_saved_teacher_reloads_with_identical_outputs(
    case, tmp_path, make_teacher, make_inputs, source_plugins
):
    teacher = make_teacher(case).float()
    inputs = make_inputs(case)
    if "input_values" in inputs:
        inputs["input_values"] = inputs["input_values"].float()
    reloaded = _reload(teacher, tmp_path, source_plugins)
    assert not reloaded.training
    _assert_same_output(reloaded(**inputs), teacher(**inputs))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    ("case", "mixer"),
    [("gpt-neox", "cumulative-mean"), ("bert", "exact-attention"), ("wav2vec2", "low-rank")],
)
def test_a_saved_student_reloads_through_its_mixer_plugin_with_identical_outputs(
    case, mixer, tmp_path, make_teacher, make_inputs, source_plugins, mixer_plugins
):
    plugin = mixer_plugins[mixer]
    student, _ = convert(make_teacher(case).float(), plugin, {}, max_length=40)
    student.eval()
    inputs = make_inputs(case)
    if "input_values" in inputs:
        inputs["input_values"] = inputs["input_values"].float()
    reloaded = _reload(student, tmp_path, source_plugins, mixer=plugin)
    assert reloaded.config.mixer == plugin.name
    assert reloaded.state_dict().keys() == student.state_dict().keys()
    _assert_same_output(reloaded(**inputs), student(**inputs))


def test_shared_and_tied_tensors_stay_shared_after_reloading(
    tmp_path, make_teacher, source_plugins, mixer_plugins
):
    student, _ = convert(
        make_teacher("llama").float(), mixer_plugins["cumulative-mean"], {}, max_length=40
    )
    reloaded = _reload(student, tmp_path, source_plugins, mixer=mixer_plugins["cumulative-mean"])
    backbone = reloaded.backbone
    assert backbone.lm_head.weight is backbone.model.embed_tokens.weight
    mixers = [layer.self_attn.mixer for layer in backbone.model.layers]
    assert all(mixer.scale is reloaded.shared["scale"] for mixer in mixers)


def test_the_config_records_what_rebuilds_the_model(tmp_path, make_teacher, mixer_plugins):
    teacher = make_teacher("bert")
    teacher.config.task_metadata = {"labels": ["negative", "neutral", "positive"]}
    student, _ = convert(teacher, mixer_plugins["cumulative-mean"], {}, max_length=32)
    student.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cald"
    assert saved["source"] == "bert"
    assert (saved["mixer"], saved["mixer_options"]) == ("cumulative-mean", {})
    assert saved["head"] == {"kind": "classification", "num_labels": 3}
    assert saved["max_sequence_length"] == 32
    assert saved["task_metadata"] == {"labels": ["negative", "neutral", "positive"]}
    assert saved["source_config"]["model_type"] == "bert"
    assert saved["source_config"]["num_hidden_layers"] == 2
    assert "_attn_implementation_internal" not in saved["source_config"]


def test_loading_a_directory_without_weights_is_a_checkpoint_error(tmp_path, make_teacher):
    make_teacher("bert").config.save_pretrained(tmp_path)
    message = f"^{tmp_path} is not a saved CaldModel: model.safetensors is missing$"
    with pytest.raises(CheckpointError, match=message):
        CaldModel.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(
    tmp_path, make_teacher, source_plugins
):
    teacher = make_teacher("bert").float()
    teacher.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["source_config"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its config: "):
        CaldModel.from_pretrained(tmp_path, source=source_plugins["bert"])


def test_hidden_states_carry_gradients_into_the_mixers(make_teacher, make_inputs, mixer_plugins):
    student, _ = convert(make_teacher("bert"), mixer_plugins["low-rank"], {}, max_length=40)
    output = student.train()(**make_inputs("bert"))
    output.hidden_states[1].pow(2).mean().backward()
    first_layer = student.backbone.encoder.layer[0].attention.self.mixer
    assert first_layer.query.weight.grad is not None
    assert student.shared["E"].weight.grad.abs().sum() > 0
    assert student.backbone.encoder.layer[1].output.dense.weight.grad is None


def test_activation_checkpointing_keeps_outputs_and_gradients(
    make_teacher, make_inputs, mixer_plugins
):
    student, _ = convert(
        make_teacher("gpt-neox"), mixer_plugins["cumulative-mean"], {}, max_length=40
    )
    inputs = make_inputs("gpt-neox")
    plain = student.train()(**inputs)
    plain.hidden_states[1].sum().backward()
    expected = student.shared["scale"].weight.grad.clone()
    student.zero_grad()
    student.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in student.backbone.gpt_neox.layers)
    checkpointed = student(**inputs)
    checkpointed.hidden_states[1].sum().backward()
    torch.testing.assert_close(checkpointed.logits, plain.logits)
    torch.testing.assert_close(student.shared["scale"].weight.grad, expected)


def test_mean_pooling_head_averages_only_valid_positions():
    head = MeanPoolClassifier(3, 2).double()
    features = torch.arange(18, dtype=torch.float64).view(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    pooled = torch.stack([features[0].mean(0), features[1, 0]])
    expected = pooled @ head.classifier.weight.T + head.classifier.bias
    torch.testing.assert_close(head(features, mask), expected, rtol=0, atol=0)


def test_token_head_predicts_every_position():
    head = TokenClassifier(4, 5)
    features = torch.randn(2, 6, 4)
    assert tuple(head(features, torch.ones(2, 6, dtype=torch.bool)).shape) == (2, 6, 5)


def test_heads_are_built_from_the_spec_alone():
    assert build_head(HeadSpec("causal_lm"), 8) is None
    assert isinstance(build_head(HeadSpec("classification", 2), 8), MeanPoolClassifier)
    assert isinstance(build_head(HeadSpec("token_classification", 2), 8), TokenClassifier)
    with pytest.raises(CaldError, match="^a classification head needs num_labels >= 1, got 0$"):
        build_head(HeadSpec("classification"), 8)


def test_the_padding_state_refuses_a_mask_of_another_batch():
    state = PaddingState()
    state.set(torch.ones(2, 4, dtype=torch.bool))
    assert state.mask is None
    state.set(torch.tensor([[True, True, False, False], [True, True, True, True]]))
    assert state.for_states(torch.zeros(2, 4, 8)) is state.mask
    with pytest.raises(RuntimeError, match=r"padding mask \(2, 4\) does not match hidden states"):
        state.for_states(torch.zeros(3, 4, 8))


def test_every_tiny_model_builds_a_head_of_the_right_width(make_teacher):
    for case, (_, _, head) in TINY_MODELS.items():
        model = make_teacher(case)
        if head.kind == "causal_lm":
            assert model.head is None
        else:
            assert model.head.classifier.in_features == 16
            assert model.head.classifier.out_features == head.num_labels


def test_reloading_a_model_leaves_the_callers_random_stream_alone(tmp_path, make_teacher, source_plugins):
    """A resumed run reloads its teacher after restoring its random state: no draw may move it."""
    teacher = make_teacher("bert")
    teacher.save_pretrained(tmp_path)
    before = torch.get_rng_state()
    CaldModel.from_pretrained(tmp_path, source=source_plugins["bert"])
    assert torch.equal(torch.get_rng_state(), before)
