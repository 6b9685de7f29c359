"""``[teacher.config]`` / ``[student.config]``: settings of the Hugging Face config over the family's.

The wav2vec2 family switches SpecAugment and LayerDrop off; overrides switch them back on, and
a layer that LayerDrop skips still yields a hidden state (the one before it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cald_testing.models import TINY_MODELS
from transformers import AutoConfig, AutoModel

from cald_framework.errors import CaldError
from cald_framework.modeling import CaldModel

NO_DROPOUT = {"hidden_dropout": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.0,
              "feat_proj_dropout": 0.0}
MASKING = {**NO_DROPOUT, "mask_time_prob": 0.5, "mask_time_length": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrained wav2vec2 (its config keeps the library's SpecAugment and LayerDrop)."""
    _, config, _ = TINY_MODELS["wav2vec2-stable"]
    settings = dict(config)
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))
    directory = tmp_path_factory.mktemp("wav2vec2")
    model.save_pretrained(directory)
    return directory


def _teacher(checkpoint: Path, source_plugins, overrides: dict | None = None) -> CaldModel:  # type: ignore[no-untyped-def]
    _, _, head = TINY_MODELS["wav2vec2-stable"]
    return CaldModel.from_source(
        "wav2vec2", str(checkpoint), head, source=source_plugins["wav2vec2"], config_overrides=overrides
    )


def _train_forward(model: CaldModel, inputs: dict[str, torch.Tensor], seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    return model.train()(**inputs).logits


def test_by_default_specaugment_and_layerdrop_are_off(checkpoint: Path, source_plugins) -> None:  # type: ignore[no-untyped-def]
    config = _teacher(checkpoint, source_plugins).backbone.config
    assert AutoConfig.from_pretrained(checkpoint).mask_time_prob > 0  # the library's default
    assert (config.mask_time_prob, config.layerdrop, config.apply_spec_augment) == (0.0, 0.0, False)


def test_an_override_reaches_the_config_and_changes_the_training_forward(
    checkpoint: Path, source_plugins, make_inputs  # type: ignore[no-untyped-def]
) -> None:
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in make_inputs("wav2vec2-stable").items()}
    plain = _teacher(checkpoint, source_plugins, NO_DROPOUT)
    masked = _teacher(checkpoint, source_plugins, MASKING)
    config = masked.backbone.config
    assert (config.mask_time_prob, config.mask_time_length, config.apply_spec_augment) == (0.5, 2, True)
    assert masked.config.config_overrides == MASKING
    # the pretrained mask embedding is loaded, not drawn afresh
    pretrained = AutoModel.from_pretrained(checkpoint).masked_spec_embed
    assert torch.equal(masked.backbone.masked_spec_embed, pretrained)
    # without masking (and dropout) training and evaluation forwards agree; with it they do not
    with torch.no_grad():
        assert torch.allclose(_train_forward(plain, inputs), plain.eval()(**inputs).logits)
        assert not torch.allclose(_train_forward(masked, inputs), masked.eval()(**inputs).logits)
        backbone_output = [model.eval()(**inputs).hidden_states[-1] for model in (masked, plain)]
        assert torch.allclose(*backbone_output)  # the same weights: evaluation is unchanged


def test_overrides_survive_saving_and_reloading(checkpoint: Path, source_plugins, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _teacher(checkpoint, source_plugins, MASKING).save_pretrained(tmp_path)
    reloaded = CaldModel.from_pretrained(tmp_path, source=source_plugins["wav2vec2"])
    assert reloaded.config.config_overrides == MASKING
    assert reloaded.backbone.config.mask_time_prob == 0.5
    assert reloaded.backbone.config.apply_spec_augment


def test_a_student_is_rebuilt_with_its_own_overrides(checkpoint: Path, source_plugins, make_inputs) -> None:  # type: ignore[no-untyped-def]
    teacher = _teacher(checkpoint, source_plugins, MASKING)
    student = teacher.reconfigured({"layerdrop": 0.3})
    assert student.config.config_overrides == {"layerdrop": 0.3}
    assert (student.backbone.config.layerdrop, student.backbone.config.mask_time_prob) == (0.3, 0.0)
    assert not student.training and not hasattr(student.backbone, "masked_spec_embed")
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in make_inputs("wav2vec2-stable").items()}
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, teacher(**inputs).logits)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mask_tim_prob": 0.1}, "config override mask_tim_prob = 0.1: Wav2Vec2Config has no setting 'mask_tim_prob'"),
        ({"layerdrop": "often"}, "config override layerdrop = 'often': Wav2Vec2Config.layerdrop is a number, not a str"),
        ({"apply_spec_augment": 1}, "config override apply_spec_augment = 1: Wav2Vec2Config.apply_spec_augment is a boolean, not a number"),
        ({"hidden_dropout": 1.5}, "config override hidden_dropout = 1.5: a dropout or probability must lie in \\[0, 1\\]"),
    ],
)
def test_bad_overrides_are_refused_in_one_line(checkpoint: Path, source_plugins, overrides: dict, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CaldError, match=f"^{message}$"):
        _teacher(checkpoint, source_plugins, overrides)


def test_layerdrop_keeps_one_hidden_state_per_layer(checkpoint: Path, source_plugins, make_inputs) -> None:  # type: ignore[no-untyped-def]
    model = _teacher(checkpoint, source_plugins, {**NO_DROPOUT, "layerdrop": 0.5}).train()
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in make_inputs("wav2vec2-stable").items()}
    skipped = []
    with torch.no_grad():
        for seed in (0, 1, 3, 8):  # LayerDrop draws: layer 1 dropped, layer 2, both, none
            torch.manual_seed(seed)
            try:
                states = model(**inputs).hidden_states
            except RuntimeError as error:  # both layers dropped: nothing ran
                assert str(error) == "no layer ran in this forward, so no hidden state was recorded"
                continue
            assert len(states) == model.num_layers + 1
            skipped += [i for i in range(1, len(states)) if states[i] is states[i - 1]]
    # a dropped layer repeats the state before it, so each student layer still meets its teacher's
    assert set(skipped) == {1, 2}
