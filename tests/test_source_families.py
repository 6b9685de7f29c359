"""The built-in source families: loading, layouts, hidden states, masks and their errors."""

from __future__ import annotations

import pytest
import torch
from cald_sources.base import locate
from cald_testing.models import TINY_MODELS
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from cald_framework.contracts import HeadSpec
from cald_framework.errors import CaldError, CheckpointError

#: case -> path (under the backbone) of the norm that follows the last layer, if any
FINAL_NORMS = {
    "gpt-neox": "gpt_neox.final_layer_norm",
    "llama": "model.norm",
    "llama-classifier": "norm",
    "wav2vec2-stable": "encoder.layer_norm",
}


def _module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def test_registered_families_declare_causality_and_modality(source_plugins):
    declared = {
        name: (plugin.causal, plugin.modality, plugin.family().causal)
        for name, plugin in source_plugins.items()
    }
    assert declared == {
        "bert": (False, "text", False),
        "gpt-neox": (True, "text", True),
        "llama": (True, "text", True),
        "wav2vec2": (False, "audio", False),
    }


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_outputs_have_the_head_shape_and_one_hidden_state_per_layer_plus_embeddings(
    case, make_teacher, make_inputs
):
    teacher, inputs = make_teacher(case), make_inputs(case)
    output = teacher(**inputs)
    head = TINY_MODELS[case][2]
    layers = TINY_MODELS[case][1]["num_hidden_layers"]
    batch, time = output.hidden_mask.shape
    assert len(output.hidden_states) == layers + 1
    assert {tuple(state.shape) for state in output.hidden_states} == {(batch, time, 16)}
    expected = {
        "classification": (batch, head.num_labels),
        "token_classification": (batch, time, head.num_labels),
        "causal_lm": (batch, time, 60),
    }[head.kind]
    assert tuple(output.logits.shape) == expected


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_hidden_states_are_the_residual_stream_before_any_final_norm(
    case, make_teacher, make_inputs
):
    teacher, inputs = make_teacher(case), make_inputs(case)
    ours = teacher(**inputs).hidden_states
    reference = teacher.backbone.base_model(**inputs, output_hidden_states=True)
    assert len(reference.hidden_states) == len(ours)
    for mine, theirs in zip(ours[:-1], reference.hidden_states[:-1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    norm_path = FINAL_NORMS.get(case)
    last = ours[-1] if norm_path is None else _module(teacher.backbone, norm_path)(ours[-1])
    torch.testing.assert_close(last, reference.last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["wav2vec2", "hubert", "wavlm"])
def test_audio_hidden_mask_marks_the_frames_of_the_valid_samples(case, make_teacher, make_inputs):
    teacher, inputs = make_teacher(case), make_inputs(case)
    mask = teacher(**inputs).hidden_mask
    frames = mask.shape[1]
    expected = teacher.backbone._get_feature_vector_attention_mask(frames, inputs["attention_mask"])
    assert frames == 39  # (400 - 10) // 5 + 1 = 79 -> (79 - 3) // 2 + 1
    assert mask.sum(-1).tolist() == [39, 22]
    assert torch.equal(mask, expected)


def test_text_hidden_mask_is_the_attention_mask(make_teacher, make_inputs):
    inputs = make_inputs("bert")
    assert torch.equal(make_teacher("bert")(**inputs).hidden_mask, inputs["attention_mask"].bool())
    del inputs["attention_mask"]
    assert make_teacher("bert")(**inputs).hidden_mask.all()


def test_speech_teachers_have_layerdrop_and_spec_augment_switched_off(make_teacher):
    backbone = make_teacher("wav2vec2").backbone
    config = backbone.config
    assert (config.layerdrop, config.mask_time_prob, config.mask_feature_prob) == (0, 0, 0)
    assert config.apply_spec_augment is False
    assert not hasattr(backbone, "masked_spec_embed")


def test_bert_backbones_drop_the_unused_pooler(make_teacher):
    teacher = make_teacher("bert")
    assert teacher.backbone.pooler is None
    assert not [name for name in teacher.state_dict() if "pooler" in name]


def test_pretrained_weights_load_from_a_local_directory(tmp_path, source_plugins):
    source, config, _ = TINY_MODELS["bert"]
    torch.manual_seed(3)
    saved = AutoModel.from_config(AutoConfig.for_model(**config))
    saved.save_pretrained(tmp_path)
    family = source_plugins["bert"].family()
    loaded = family.load_backbone(str(tmp_path), HeadSpec("classification", 2))
    expected = {k: v for k, v in saved.state_dict().items() if not k.startswith("pooler.")}
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_feature_extractor_loads_from_a_local_directory(tmp_path, source_plugins):
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path)
    extractor = source_plugins["wav2vec2"].family().load_preprocessor(str(tmp_path))
    assert isinstance(extractor, Wav2Vec2FeatureExtractor)
    assert extractor.return_attention_mask is True


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("HuggingFaceTB/SmolLM2-135M", ("HuggingFaceTB/SmolLM2-135M", {})),
        ("models/smol/model-q8.GGUF", ("models/smol", {"gguf_file": "model-q8.GGUF"})),
        ("org/repo::file.gguf", ("org/repo", {"gguf_file": "file.gguf"})),
    ],
)
def test_locate_splits_gguf_references(reference, expected):
    assert locate(reference) == expected


def _family(source_plugins, case):
    source, config, _ = TINY_MODELS[case]
    return source_plugins[source].family(), dict(config)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path, source_plugins):
    family = source_plugins["bert"].family()
    with pytest.raises(CheckpointError, match=r"^cannot load bert model '.*/absent': "):
        family.load_backbone(str(tmp_path / "absent"), HeadSpec("classification", 2))


def test_encoders_have_no_causal_lm_head(source_plugins):
    family, config = _family(source_plugins, "bert")
    with pytest.raises(CaldError, match=r"^source 'bert' has no causal language-model head; use"):
        family.backbone_from_config(config, HeadSpec("causal_lm"))


def test_bert_decoders_are_refused(source_plugins):
    family, config = _family(source_plugins, "bert")
    config["is_decoder"] = True
    message = "^source 'bert' converts encoders only; BertModel is a decoder$"
    with pytest.raises(CaldError, match=message):
        family.backbone_from_config(config, HeadSpec("classification", 2))


def test_a_model_without_the_family_layout_names_the_missing_path(source_plugins):
    family = source_plugins["llama"].family()
    _, neox, head = TINY_MODELS["gpt-neox"]
    with pytest.raises(
        CaldError,
        match="^GPTNeoXForCausalLM does not have the llama layout: "
        "no 'self_attn' under GPTNeoXLayer$",
    ):
        family.backbone_from_config(neox, head)


def test_unknown_model_type_is_refused(source_plugins):
    family, config = _family(source_plugins, "bert")
    config["model_type"] = "not-a-model"
    with pytest.raises(CaldError, match="model_type 'not-a-model', which transformers does not"):
        family.backbone_from_config(config, HeadSpec("classification", 2))


def test_speech_models_with_an_adapter_are_refused(source_plugins):
    family, config = _family(source_plugins, "wav2vec2")
    config["add_adapter"] = True
    with pytest.raises(CaldError, match=r"adapter \(add_adapter=True\)"):
        family.backbone_from_config(config, HeadSpec("classification", 2))


def test_unknown_and_missing_inputs_are_named(make_teacher, make_inputs):
    teacher, inputs = make_teacher("llama"), make_inputs("llama")
    with pytest.raises(
        CaldError,
        match=r"^llama model got unknown inputs \['labels'\]; "
        r"it takes \['input_ids', 'attention_mask'\]$",
    ):
        teacher(**inputs, labels=inputs["input_ids"])
    with pytest.raises(CaldError, match="^wav2vec2 model needs the input 'input_values'$"):
        make_teacher("wav2vec2")(attention_mask=inputs["attention_mask"])


def test_a_mask_of_another_shape_is_refused(make_teacher, make_inputs):
    inputs = make_inputs("bert")
    inputs["attention_mask"] = inputs["attention_mask"][:, :5]
    message = r"attention_mask \(2, 5\) does not match input_ids \(2, 9\)$"
    with pytest.raises(CaldError, match=message):
        make_teacher("bert")(**inputs)


@pytest.mark.parametrize(("case", "rows"), [("bert", 60), ("roberta", 62)])
def test_position_tables_grow_for_longer_inputs(case, rows, make_teacher, source_plugins):
    teacher = make_teacher(case)
    family = source_plugins["bert"].family()
    table = teacher.backbone.embeddings.position_embeddings.weight.detach().clone()
    assert family.extend_positions(teacher.backbone, 60) is True
    grown = teacher.backbone.embeddings.position_embeddings.weight
    assert grown.shape[0] == rows  # RoBERTa numbers positions from padding_idx + 1 = 2
    assert torch.equal(grown[: table.shape[0]], table)
    assert family.extend_positions(teacher.backbone, 60) is False
    ids = torch.full((1, 60), 5)
    assert teacher(input_ids=ids).hidden_states[-1].shape == (1, 60, 16)


def test_families_without_a_position_table_need_no_growing(make_teacher, source_plugins):
    teacher = make_teacher("llama")
    assert source_plugins["llama"].family().extend_positions(teacher.backbone, 500) is False
