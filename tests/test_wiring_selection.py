"""Best-checkpoint selection follows the task's ``higher_is_better``.

A stub task reports scripted metric values, one per evaluation; where lower is better the run
must keep and restore the lowest one (as a language model must export its best perplexity,
not its worst), and where higher is better the highest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from cald_framework.contracts import CaldOutput, LossWeights, MetricAccumulator
from cald_framework.engine import LossConfig, StepEnd, train
from cald_framework.plugin_manager import load_registries
from cald_framework.testing.engine import TinyModel, TinyTask, evaluation, state_of, tiny_data, training

#: the metric of the evaluations after steps 1..5: the lowest at step 2, the highest at step 4
SCRIPT = (5.0, 3.0, 4.0, 6.0, 4.5)


class _Scripted(MetricAccumulator):
    def __init__(self, value: float):
        self.value = value

    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {"score": self.value}


class ScriptedTask(TinyTask):
    """The tiny classification task, scored by the next value of :data:`SCRIPT` at each evaluation."""

    primary_metric = "score"
    higher_is_better: ClassVar[bool]

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def metrics(self) -> MetricAccumulator:
        self.evaluations += 1
        return _Scripted(SCRIPT[self.evaluations - 1])


class LowerIsBetter(ScriptedTask):
    higher_is_better = False


class HigherIsBetter(ScriptedTask):
    higher_is_better = True


@pytest.mark.parametrize(
    "kind, best_step", [(LowerIsBetter, 2), (HigherIsBetter, 4)], ids=["lower", "higher"]
)
def test_the_best_checkpoint_follows_higher_is_better(
    tmp_path: Path, kind: type[ScriptedTask], best_step: int
) -> None:
    task, model = kind(), TinyModel()
    states: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(end: StepEnd) -> None:
        states[end.step] = state_of(end.model)

    result = train(
        model, task, tiny_data(), training=training(max_steps=len(SCRIPT)),
        evaluation=evaluation(every=1), loss=LossConfig(LossWeights(task=1.0)),
        output_dir=tmp_path, seed=0, on_step_end=snapshot,
    )
    assert task.evaluations == len(SCRIPT)
    assert (result.best_step, result.metrics) == (best_step, {"score": SCRIPT[best_step - 1]})
    assert result.higher_is_better is task.higher_is_better
    assert all(torch.equal(value, states[best_step][name]) for name, value in model.state_dict().items())
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    flagged = [event["step"] for event in events if event["event"] == "eval" and event["best"]]
    assert flagged[-1] == best_step


def test_perplexity_is_lower_is_better() -> None:
    """The built-in language-modelling task declares it, so its runs export the lowest perplexity."""
    plugin = load_registries().tasks.get("causal-lm")
    task = plugin.build(plugin.options.model_construct())  # options unchecked: no data is read
    assert (task.primary_metric, task.higher_is_better) == ("perplexity", False)
