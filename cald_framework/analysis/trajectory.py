"""Training trajectories in representation space (the paper's Figure 4).

Each snapshot becomes one point: its hidden states on a fixed sample set, averaged per layer
over each sample's valid positions and concatenated over layers and samples. t-SNE maps all
points of all runs together to two dimensions, so runs that move through similar
representations (a student and the teacher it follows) draw nearby lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CaldError
from .hidden import Batch, outputs, pooled
from .output import figure, progress
from .snapshots import Snapshot


def features(model: torch.nn.Module, batches: Sequence[Batch]) -> torch.Tensor:
    """The snapshot's point before t-SNE: pooled states of every sample and layer, flattened."""
    return torch.cat([pooled(output).float().cpu().flatten() for output in outputs(model, batches)])


def embed(points: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of ``points`` ``[n, F]`` to ``[n, 2]``; perplexity adapts to few points.

    A run has tens to hundreds of snapshots, where the exact gradient is both faster and more
    faithful than the Barnes-Hut approximation meant for many thousands of points.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise CaldError(
            "trajectories need scikit-learn: pip install 'cald-framework[analysis]'"
        ) from error
    count = points.shape[0]
    if count < 3:
        raise CaldError(f"a t-SNE trajectory needs at least 3 snapshots, got {count}")
    perplexity = min(30.0, max(1.0, (count - 1) / 3))
    method = "exact" if count <= 1000 else "barnes_hut"
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(points)


def trajectory(
    snapshots: Sequence[Snapshot], batches: Sequence[Batch], *, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per snapshot: ``run``, ``step`` and its t-SNE coordinates ``x``, ``y``."""
    points = []
    for snapshot in progress(snapshots, "trajectory"):
        model = snapshot.load()
        points.append(features(model, batches))
        del model
    sizes = {point.numel() for point in points}
    if len(sizes) > 1:
        raise CaldError(
            f"snapshots give hidden states of different sizes {sorted(sizes)}: the runs must "
            "share the source model's widths and layers"
        )
    coordinates = embed(torch.stack(points).numpy(), seed)
    return [
        {"run": snapshot.run, "step": snapshot.step, "x": float(x), "y": float(y)}
        for snapshot, (x, y) in zip(snapshots, coordinates)
    ]


def plot_trajectory(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One line per run through its snapshots in step order; a run of one point is a star."""
    runs = list(dict.fromkeys(row["run"] for row in rows))
    with figure(path, width=6.5) as (axes,):
        for run in runs:
            mine = sorted((row for row in rows if row["run"] == run), key=lambda row: row["step"])
            xs, ys = [row["x"] for row in mine], [row["y"] for row in mine]
            if len(mine) == 1:
                axes.plot(xs, ys, "*", markersize=14, label=run)
                continue
            (line,) = axes.plot(xs, ys, "o-", markersize=4, label=run)
            axes.plot(xs[:1], ys[:1], "s", color=line.get_color())
            axes.annotate(str(mine[-1]["step"]), (xs[-1], ys[-1]), fontsize=7)
        axes.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
                 title="trajectories of hidden states (square = first snapshot)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return path
