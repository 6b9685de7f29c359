"""Hidden-state drift: how far a model's residual stream has moved from a reference model.

The paper's Figure 3 measures the cosine distance between the hidden states of the pretrained
model and those of each checkpoint of a fine-tuning run. Small drift means the pretrained model
is already a good guide (trajectory or waypoint guidance pays off); large drift means the
target teacher is far from where the student starts (hybrid guidance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CaldError
from .hidden import Batch, cosine_distance, outputs, valid_states
from .output import figure, progress
from .snapshots import Snapshot


def _layer_column(index: int) -> str:
    return f"layer_{index}"


def drift(
    reference: nn.Module, snapshots: Sequence[Snapshot], batches: Sequence[Batch]
) -> list[dict[str, Any]]:
    """One row per snapshot: the mean cosine distance to ``reference`` per hidden state.

    ``layer_0`` is the embedding output and ``layer_i`` the output of layer ``i``; ``mean``
    averages the layers ``1..L`` (what layerwise distillation compares by default). Distances
    are averaged over every valid position of every batch. Snapshots are loaded one at a
    time, onto the reference's device, and released after use.
    """
    device = next(reference.parameters()).device
    expected = []
    for output in outputs(reference, batches):
        expected.append((output.hidden_mask.cpu(), [s.cpu() for s in valid_states(output)]))
    rows = []
    for snapshot in progress(snapshots, "drift"):
        model = snapshot.load().to(device)
        totals = torch.zeros(len(expected[0][1]), dtype=torch.float64)
        for index, ((mask, states), output) in enumerate(zip(expected, outputs(model, batches))):
            if not torch.equal(output.hidden_mask.cpu(), mask):
                raise CaldError(
                    f"{snapshot.label}: its valid positions on batch {index} differ from the "
                    "reference model's, so their hidden states cannot be compared"
                )
            found = valid_states(output)
            if len(found) != len(states):
                raise CaldError(
                    f"{snapshot.label} has {len(found) - 1} layers, the reference {len(states) - 1}"
                )
            for layer, (ours, theirs) in enumerate(zip(found, states)):
                totals[layer] += cosine_distance(ours.cpu(), theirs).double().sum()
        del model
        per_layer = (totals / sum(int(mask.sum()) for mask, _ in expected)).tolist()
        rows.append(
            {
                "run": snapshot.run,
                "step": snapshot.step,
                "mean": sum(per_layer[1:]) / max(len(per_layer) - 1, 1),
                **{_layer_column(i): value for i, value in enumerate(per_layer)},
            }
        )
    return rows


def plot_drift(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Left: mean drift against step, one line per run. Right: per-layer drift at each run's
    last snapshot."""
    runs = sorted({row["run"] for row in rows})
    layers = sum(1 for key in rows[0] if key.startswith("layer_"))
    from matplotlib.ticker import MaxNLocator

    with figure(path, panels=2) as (over_steps, over_layers):
        for run in runs:
            mine = sorted((row for row in rows if row["run"] == run), key=lambda row: row["step"])
            over_steps.plot([r["step"] for r in mine], [r["mean"] for r in mine], "o-", label=run)
            last = mine[-1]
            over_layers.plot(
                range(layers),
                [last[_layer_column(i)] for i in range(layers)],
                "o-",
                label=f"{run} @ {last['step']}",
            )
        over_steps.set(xlabel="step", ylabel="mean cosine distance (layers 1..L)",
                       title="hidden-state drift from the reference")
        over_layers.set(xlabel="hidden state (0 = embeddings)", ylabel="cosine distance",
                        title="drift per layer, last snapshot")
        over_layers.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axes in (over_steps, over_layers):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
    return path
