"""RoBERTa's ``<s>`` dense-tanh head as a text-classification option (the paper's NLP head)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from cald_tasks.classification import TextClassificationTask
from cald_tasks.options import TextClassificationOptions
from cald_testing.models import TINY_MODELS
from transformers import RobertaConfig
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

from cald_framework.contracts import HeadSpec
from cald_framework.conversion import convert
from cald_framework.heads import FirstTokenClassifier, MeanPoolClassifier, build_head
from cald_framework.modeling import CaldModel

SPECS = Path(__file__).resolve().parents[1] / "specs" / "paper"


def test_the_head_computes_robertas_classification_head() -> None:
    torch.manual_seed(0)
    ours = build_head(HeadSpec("first_token_classification", 3), 8).eval()
    reference = RobertaClassificationHead(RobertaConfig(hidden_size=8, num_labels=3)).eval()
    reference.load_state_dict(ours.state_dict())  # the same names: dense, out_proj
    features, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(ours(features, mask), reference(features))
    assert ours.dropout.p == reference.dropout.p == 0.1


@pytest.mark.parametrize("head, kind", [("mean-linear", MeanPoolClassifier), ("first-token-tanh", FirstTokenClassifier)])
def test_the_task_option_picks_the_head(head: str, kind: type) -> None:
    task = TextClassificationTask(TextClassificationOptions(dataset="org/data", head=head))
    assert isinstance(build_head(HeadSpec(task.head_kind(), 2), 8), kind)


def test_the_student_starts_from_the_teachers_head(source_plugins, mixer_plugins) -> None:  # type: ignore[no-untyped-def]
    _, config, _ = TINY_MODELS["roberta"]
    head = HeadSpec("first_token_classification", 2)
    teacher = CaldModel.from_source_config("bert", config, head, max_length=40, source=source_plugins["bert"])
    student, _ = convert(teacher, mixer_plugins["cumulative-mean"], {}, max_length=40)
    assert isinstance(student.head, FirstTokenClassifier)
    for name, value in teacher.head.state_dict().items():
        assert torch.equal(student.head.state_dict()[name], value)


@pytest.mark.parametrize("task", ["qnli", "qqp", "sst2", "imdb"])
def test_the_nlp_paper_specs_use_robertas_head(task: str) -> None:
    spec = tomllib.loads((SPECS / f"nlp-roberta-linformer-{task}.toml").read_text())
    assert spec["task"]["head"] == "first-token-tanh"
