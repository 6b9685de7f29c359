"""A tiny self-contained model, task and data set for engine and guidance tests.

The model is float64 (exact comparisons), has dropout (so that restoring random streams
matters) and a parameter tagged ``_no_weight_decay``; its hidden states follow the contract.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..contracts import (
    CaldOutput,
    ExtractedStates,
    HeadSpec,
    MetricAccumulator,
    NoOptions,
    Task,
    TaskData,
    Waypoint,
)
from ..engine.tensorfiles import read_tensors, write_tensors
from ..engine.waypoints import write_manifest
from ..layout import waypoint_file
from ..spec.sections import EvaluationSection, TrainingSection

VOCAB, WIDTH, LABELS = 12, 8, 2


class TinyBlock(nn.Module):
    """Pre-norm residual block: a causal running mean over valid positions, then an MLP."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask[..., None].to(hidden.dtype)
        running = (self.norm(hidden) * weights).cumsum(1) / weights.cumsum(1).clamp_min(1)
        hidden = hidden + self.dropout(self.mix(running))
        return hidden + self.dropout(self.mlp(hidden))


class TinyModel(nn.Module):
    """Embeddings, :class:`TinyBlock` layers and a pooled classifier, its weights drawn from
    ``seed`` without touching torch's global generator (so tests can build it anywhere)."""

    def __init__(self, layers: int = 2, dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList(TinyBlock(WIDTH, dropout) for _ in range(layers))
        self.gate = nn.Parameter(torch.eye(WIDTH) + 0.01 * torch.randn(WIDTH, WIDTH))
        self.gate._no_weight_decay = True  # type: ignore[attr-defined]
        self.head = nn.Linear(WIDTH, LABELS)
        torch.set_rng_state(generator_state)
        self.double()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CaldOutput:
        mask = attention_mask.bool()
        hidden = self.embed(input_ids)
        states = [hidden]
        for block in self.blocks:
            hidden = block(hidden, mask)
            states.append(hidden)
        weights = mask[..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return CaldOutput(self.head(pooled @ self.gate), tuple(states), mask)


class Counting(nn.Module):
    """Wraps a teacher: appends its name to a shared log at each forward, and notes how it ran."""

    def __init__(self, model: nn.Module, name: str, log: list[str]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.log = log
        #: ``(training, inference mode, grad enabled)`` of each forward
        self.conditions: set[tuple[bool, bool, bool]] = set()
        #: the CPU autocast dtype of each forward (``None`` without autocast)
        self.autocast: set[torch.dtype | None] = set()

    def forward(self, **inputs: torch.Tensor) -> CaldOutput:
        self.log.append(self.name)
        self.conditions.add(
            (self.training, torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        )
        enabled = torch.is_autocast_enabled("cpu")
        self.autocast.add(torch.get_autocast_dtype("cpu") if enabled else None)
        return self.model(**inputs)


def calls_per_step(log: list[str]) -> list[list[str]]:
    """Split a call log at the ``"|"`` markers that :func:`mark_steps` appends after each step."""
    steps: list[list[str]] = [[]]
    for entry in log:
        if entry == "|":
            steps.append([])
        else:
            steps[-1].append(entry)
    return steps[:-1]


def mark_steps(log: list[str]) -> Callable[[Any], None]:
    """A step-end callback that appends ``"|"`` to ``log``, for :func:`calls_per_step`."""
    return lambda end: log.append("|")


def make_waypoints(directory: Path, steps: tuple[int, ...] = (2, 4, 6)) -> list[Waypoint]:
    """Waypoint files holding differently seeded tiny models, and their manifest."""
    waypoints = []
    for step in steps:
        path = directory / waypoint_file(step)
        write_tensors(path, TinyModel(seed=100 + step).state_dict())
        waypoints.append(Waypoint(step, path))
    write_manifest(directory, steps[-1], waypoints)
    return waypoints


class Accuracy(MetricAccumulator):
    """The :class:`TinyTask`'s metric: the share of rows whose argmax is the label."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: CaldOutput, batch: Mapping[str, Any]) -> None:
        self.correct += int((output.logits.argmax(-1) == batch["labels"]).sum())
        self.total += int(batch["labels"].numel())

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(1, self.total)}


class TinyTask(Task):
    """Sequence classification; ``nan_at`` lists the loss calls (0-based) that return NaN."""

    primary_metric = "accuracy"
    modality = "text"

    def __init__(self, nan_at: set[int] | None = None) -> None:
        super().__init__(NoOptions())
        self.nan_at = nan_at or set()
        self.calls = 0

    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        return tiny_data(seed=seed)

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        loss = F.cross_entropy(output.logits, batch["labels"])
        self.calls += 1
        return loss * float("nan") if self.calls - 1 in self.nan_at else loss

    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return output.logits, None

    def metrics(self) -> MetricAccumulator:
        return Accuracy()


def _rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for _ in range(count):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(2, 7))]
        rows.append({"input_ids": ids, "label": int(ids[0] > VOCAB // 2)})
    return rows


def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Right-padded ``input_ids`` with their mask, and the labels: a batch as tasks give it."""
    longest = max(len(row["input_ids"]) for row in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        mask[index, : len(row["input_ids"])] = 1
    labels = torch.tensor([row["label"] for row in rows])
    return {"inputs": {"input_ids": ids, "attention_mask": mask}, "labels": labels}


def tiny_data(train: int = 24, eval: int = 8, seed: int = 0) -> TaskData:
    """``train`` and ``eval`` rows of 2 to 6 random ids, labelled by the first, from ``seed``."""
    rng = random.Random(seed)
    rows = _rows(train, rng)
    return TaskData(
        train=rows,
        eval=_rows(eval, rng),
        collate=collate,
        head=HeadSpec("classification", LABELS),
        train_lengths=[len(row["input_ids"]) for row in rows],
    )


def all_layers(output: CaldOutput) -> ExtractedStates:
    """The trivial extractor: every hidden state after the embeddings, unnormalised."""
    return ExtractedStates(list(output.hidden_states[1:]), output.hidden_mask)


def training(**changes: Any) -> TrainingSection:
    """Small, fast settings: 4 rows a batch, 6 steps, constant LR, fp32, no warm-up."""
    settings: dict[str, Any] = dict(
        lr=1e-2, batch_size=4, max_steps=6, schedule="constant", log_every=1, keep_last=2,
        group_by_length=False,
    )
    settings.update(changes)
    return TrainingSection(**settings)


def evaluation(**changes: Any) -> EvaluationSection:
    """The spec's evaluation defaults with ``changes``, the partner of :func:`training`."""
    return EvaluationSection(**changes)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights, to compare with after it trains on."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class WaypointLoader:
    """Builds a counted teacher from a waypoint file; remembers how many were alive at each load."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.alive: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self.alive_at_load: list[int] = []

    def __call__(self, path: Path) -> nn.Module:
        self.alive_at_load.append(len(self.alive))
        model = TinyModel()
        model.load_state_dict(read_tensors(path))
        self.alive.add(model)
        return Counting(model, path.stem, self.log)
