"""The spec's distillation settings reach the losses the trainer logs.

``tests/test_losses.py`` checks the loss formulas on their own; here one real training step
(``train`` with one step, logging it) runs on a padded batch with differently seeded teacher
and student, and the logged ``kd`` and ``ld`` must equal the documented formulas computed by
hand from the two models' outputs on that batch:

* KD: ``KL(softmax(t/T) || softmax(s/T))`` summed over classes, averaged over the batch rows
  (sequence logits) or over the valid positions (token logits), times ``T**2`` when
  ``kd_scale_t2``;
* LD: per layer, the squared error summed over features and valid positions, divided by the
  number of valid positions times the width; then the mean or the sum over layers.

A temperature other than 1 and 2, both ``kd_scale_t2`` settings and both ``ld_reduction``
settings are used, so that a setting lost between the spec and the loss changes a value.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cald_framework.contracts import AvailableTeachers, CaldOutput, HeadSpec, Task, TaskData
from cald_framework.engine import GuidanceSetup, LossConfig, train
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.spec.sections import GuidanceSection
from cald_framework.testing.engine import TinyModel, TinyTask, all_layers, collate, evaluation, tiny_data, training

TEMPERATURE = 3.0


class Recording(nn.Module):
    """Wraps a teacher and keeps a copy of the inputs of each forward: the batches trained on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.inputs: list[dict[str, torch.Tensor]] = []

    def forward(self, **inputs: torch.Tensor) -> CaldOutput:
        self.inputs.append({name: value.clone() for name, value in inputs.items()})
        return self.model(**inputs)


def _first_step(
    student: nn.Module, teacher: nn.Module, task: Task, data: TaskData, guidance: GuidanceSection,
    out: Path, **changes: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train one step under the target mode; returns its logged ``train`` event and its batch."""
    recording = Recording(teacher)
    plugin = load_registries().guidance.get("target")
    setup = GuidanceSetup(plugin, plugin.options.model_validate({}), AvailableTeachers(target=lambda: recording))
    train(
        student, task, data, training=training(max_steps=1, **changes),
        evaluation=evaluation(select_best=False), loss=LossConfig.from_section(guidance),
        output_dir=out, seed=0, guidance=setup, extractor=all_layers,
    )
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (logged,) = [event for event in events if event["event"] == "train"]
    (batch,) = recording.inputs
    assert not batch["attention_mask"].bool().all()  # the batch is padded: padding must not count
    return logged, batch


def kd_by_hand(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None, temperature: float,
    scale_t2: bool,
) -> float:
    """KL(teacher || student) at temperature T, averaged over rows (or ``valid`` positions)."""
    p_teacher = (teacher / temperature).softmax(-1)
    log_ratio = (teacher / temperature).log_softmax(-1) - (student / temperature).log_softmax(-1)
    per_position = (p_teacher * log_ratio).sum(-1)
    if valid is not None:
        per_position = per_position[valid]
    kl = per_position.mean().item()
    return kl * temperature**2 if scale_t2 else kl


def ld_by_hand(
    student: list[torch.Tensor], teacher: list[torch.Tensor], valid: torch.Tensor, reduction: str
) -> float:
    """Per layer: squared error over valid positions and features, over their count; then reduce."""
    per_layer = [((s - t)[valid] ** 2).mean().item() for s, t in zip(student, teacher)]
    return sum(per_layer) if reduction == "sum" else sum(per_layer) / len(per_layer)


@pytest.mark.parametrize("scale_t2, reduction", [(True, "sum"), (False, "mean")])
def test_logged_kd_and_ld_follow_the_spec_on_a_padded_batch(
    tmp_path: Path, scale_t2: bool, reduction: str
) -> None:
    guidance = GuidanceSection(
        temperature=TEMPERATURE, kd_scale_t2=scale_t2, ld_reduction=reduction, alpha_ld=1.0
    )
    logged, batch = _first_step(
        TinyModel(seed=1, dropout=0.0), TinyModel(seed=5, dropout=0.0), TinyTask(), tiny_data(),
        guidance, tmp_path,
    )
    with torch.no_grad():
        student, teacher = TinyModel(seed=1, dropout=0.0)(**batch), TinyModel(seed=5, dropout=0.0)(**batch)
    valid = batch["attention_mask"].bool()
    kd = kd_by_hand(student.logits, teacher.logits, None, TEMPERATURE, scale_t2)
    s_layers, t_layers = list(student.hidden_states[1:]), list(teacher.hidden_states[1:])
    ld = ld_by_hand(s_layers, t_layers, valid, reduction)
    assert logged["kd"] == pytest.approx(kd, rel=1e-6)
    assert logged["ld"] == pytest.approx(ld, rel=1e-6)
    layers = [((s - t)[valid] ** 2).mean().item() for s, t in zip(s_layers, t_layers)]
    assert logged["ld_layers"] == pytest.approx(layers, rel=1e-6)  # each layer's, not only their mean

    # the checks can tell: each way of getting it wrong gives another value
    swapped = kd_by_hand(teacher.logits, student.logits, None, TEMPERATURE, scale_t2)
    everywhere = ld_by_hand(s_layers, t_layers, torch.ones_like(valid), reduction)
    assert kd != pytest.approx(swapped, rel=1e-3) and ld != pytest.approx(everywhere, rel=1e-3)


# ------------------------------------------------------------------ token-level KD (causal LM)

LM_VOCAB = 60  # the tiny gpt-neox of conftest
LM_LENGTHS = (9, 5)


def _lm_collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The tiny right-padded batch (pad id 0), labelled with its own ids, padding ignored (-100)."""
    inputs = collate([{**row, "label": 0} for row in rows])["inputs"]
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    return {"inputs": inputs, "labels": labels}


def _lm_data() -> TaskData:
    rng = random.Random(0)
    rows = [{"input_ids": [rng.randrange(3, LM_VOCAB) for _ in range(n)]} for n in LM_LENGTHS]
    return TaskData(
        train=rows, eval=rows, collate=_lm_collate, head=HeadSpec("causal_lm", LM_VOCAB),
        train_lengths=list(LM_LENGTHS),
    )


def _causal_lm_task(folder: Path) -> Task:
    """The built-in causal-lm task (its data files are never read: the test brings the rows)."""
    (folder / "corpus.txt").write_text("unused\n")
    plugin = load_registries().tasks.get("causal-lm")
    options = {"dataset": "text", "data_files": str(folder / "corpus.txt"), "block_size": 16}
    return plugin.build(plugin.options.model_validate(options))


def test_token_level_kd_averages_over_valid_positions_only(
    tmp_path: Path, make_teacher: Callable[..., CaldModel]
) -> None:
    guidance = GuidanceSection(temperature=TEMPERATURE, kd_scale_t2=False, alpha_ld=0.0)
    logged, batch = _first_step(
        make_teacher("gpt-neox", seed=1), make_teacher("gpt-neox", seed=2),
        _causal_lm_task(tmp_path), _lm_data(), guidance, tmp_path / "run", batch_size=len(LM_LENGTHS),
    )
    with torch.no_grad():
        student = make_teacher("gpt-neox", seed=1)(**batch).logits
        teacher = make_teacher("gpt-neox", seed=2)(**batch).logits
    valid = batch["attention_mask"].bool()
    kd = kd_by_hand(student, teacher, valid, TEMPERATURE, False)
    assert logged["kd"] == pytest.approx(kd, rel=1e-6)
    assert kd != pytest.approx(kd_by_hand(student, teacher, None, TEMPERATURE, False), rel=1e-3)


class LabelRecording(TinyTask):
    """The tiny task, keeping the labels of the last batch its loss saw."""

    labels: torch.Tensor

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        self.labels = batch["labels"].clone()
        return super().loss(output, batch)


def test_the_task_term_and_the_weighted_sum_follow_the_spec(tmp_path: Path) -> None:
    """The ``task`` term is the task's loss on the student, unweighted; ``loss`` applies the alphas."""
    guidance = GuidanceSection(temperature=TEMPERATURE, alpha_task=0.5, alpha_kd=2.0, alpha_ld=3.0)
    task = LabelRecording()
    logged, batch = _first_step(
        TinyModel(seed=1, dropout=0.0), TinyModel(seed=5, dropout=0.0), task, tiny_data(), guidance, tmp_path
    )
    with torch.no_grad():
        expected = F.cross_entropy(TinyModel(seed=1, dropout=0.0)(**batch).logits, task.labels).item()
    assert logged["task"] == pytest.approx(expected, rel=1e-6)
    weighted = 0.5 * logged["task"] + 2.0 * logged["kd"] + 3.0 * logged["ld"]
    assert logged["loss"] == pytest.approx(weighted, rel=1e-6)
