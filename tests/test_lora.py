"""LoRA on a student's transferred weights: what trains, the merge on export, bitwise resume."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cald_testing.workspaces import build_review_workspace
from safetensors import safe_open
from transformers import AutoModel

from cald_framework import cli
from cald_framework.conversion import convert
from cald_framework.engine import StepEnd
from cald_framework.engine.optim import build_optimizer
from cald_framework.errors import CaldError
from cald_framework.lora import add_lora, lora_targets, merge_lora
from cald_framework.modeling import WEIGHTS_NAME, CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.run import train as train_stage
from cald_framework.spec.sections import LoraSection
from cald_framework.testing.engine import training

BATCH = {
    "input_ids": torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
}


@pytest.fixture
def student(make_teacher: Callable[..., CaldModel]) -> tuple[CaldModel, list[str]]:
    """A converted tiny BERT (float64) and the names of its new tensors."""
    converted, report = convert(
        make_teacher("bert"), load_registries().mixers.get("linformer"), {"k": 8}, 40
    )
    return converted, report.new


def test_trainable_parameters_are_adapters_mixers_and_head(student: tuple[CaldModel, list[str]]) -> None:
    model, new = student
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    adapted = lora_targets(model, None)
    assert adapted == [name for name in linears if ".mixer." not in name and not name.startswith("head.")]

    summary = add_lora(model, LoraSection(r=4))

    adapters = sum(4 * (linears[name].in_features + linears[name].out_features) for name in adapted)
    fully = sum(sizes[name] for name in new) + sum(v for k, v in sizes.items() if k.startswith("head."))
    assert summary.trainable_parameters == adapters + fully
    assert summary.total_parameters == sum(sizes.values()) + adapters
    optimizer = build_optimizer(model, training())
    in_optimizer = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert in_optimizer == summary.trainable_parameters


def test_target_modules_select_by_suffix_and_refuse_what_matches_nothing(
    student: tuple[CaldModel, list[str]],
) -> None:
    model, _ = student
    assert lora_targets(model, ["intermediate.dense"]) == [
        "backbone.encoder.layer.0.intermediate.dense",
        "backbone.encoder.layer.1.intermediate.dense",
    ]
    with pytest.raises(CaldError) as error:
        lora_targets(model, ["mixer.query"])
    assert str(error.value).startswith(
        "student.lora.target_modules: 'mixer.query' matches no transferred linear layer (they are: "
        "backbone.encoder.layer.0.attention.output.dense, "
    )


def test_merge_reproduces_the_adapted_model_and_saves_no_peft_keys(
    student: tuple[CaldModel, list[str]], tmp_path: Path
) -> None:
    model, _ = student
    add_lora(model, LoraSection(r=4, alpha=8))
    with torch.no_grad():  # adapters start as a no-op (B = 0): give them an effect to merge
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    adapted = model(**BATCH).logits

    merge_lora(model)
    torch.testing.assert_close(model(**BATCH).logits, adapted, rtol=0, atol=1e-12)
    assert not hasattr(model, "peft_config")

    model.save_pretrained(tmp_path / "student")
    with safe_open(str(tmp_path / "student" / WEIGHTS_NAME), "pt") as saved:
        keys = list(saved.keys())
    assert not [key for key in keys if "lora_" in key or "base_layer" in key]
    reloaded = CaldModel.from_pretrained(tmp_path / "student")  # without peft, in fp32
    torch.testing.assert_close(reloaded(**BATCH).logits, model.float()(**BATCH).logits, rtol=0, atol=0)


class Crash(Exception):
    """Stands for the process dying after an update, before that step's checkpoint."""


def _crash_at(step: int) -> Callable[[StepEnd], None]:
    def hook(end: StepEnd) -> None:
        if end.step == step:
            raise Crash

    return hook


def _run(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str, crash_at: int | None = None) -> Path:
    build_review_workspace(
        root,
        {
            "guidance.mode": "unguided",
            "student.init": "source",
            "student.lora": {"r": 4, "dropout": 0.1},
            "training.epochs": 1,
        },
    )
    monkeypatch.chdir(root)
    if crash_at is not None:
        patched = functools.partial(train_stage.train, on_step_end=_crash_at(crash_at))
        monkeypatch.setattr(train_stage, "train", patched)
        with pytest.raises(Crash):
            cli.main(["run", "spec.toml", *args])
        monkeypatch.undo()
        monkeypatch.chdir(root)
        return root / "run"
    assert cli.main(["run", "spec.toml", *args]) == 0
    return root / "run"


def _events(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows if row["event"] == "train"]


def test_a_lora_run_trains_resumes_bitwise_and_exports_a_plain_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _run(tmp_path / "straight", monkeypatch)
    _run(tmp_path / "resumed", monkeypatch, crash_at=3)
    resumed = _run(tmp_path / "resumed", monkeypatch, "--resume")

    assert _events(resumed) == _events(straight)
    one = CaldModel.from_pretrained(straight / "student").state_dict()
    two = CaldModel.from_pretrained(resumed / "student").state_dict()
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert not [key for key in one if "lora_" in key or "base_layer" in key]
    # the transferred embeddings stayed frozen; the adapted layers moved by the merged update
    teacher = AutoModel.from_pretrained(tmp_path / "straight" / "tiny-bert")
    embeddings = teacher.embeddings.word_embeddings.weight
    assert torch.equal(one["backbone.embeddings.word_embeddings.weight"], embeddings)
    dense = teacher.encoder.layer[0].intermediate.dense.weight
    assert not torch.equal(one["backbone.encoder.layer.0.intermediate.dense.weight"], dense)
