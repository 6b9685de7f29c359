"""Trajectories: per-snapshot features from pooled hidden states, embedded with t-SNE."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from cald_framework.analysis.snapshots import Snapshot
from cald_framework.analysis.trajectory import embed, features, plot_trajectory, trajectory
from cald_framework.errors import CaldError


def _noisy(model, seed: int, scale: float):
    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in changed.backbone.encoder.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return changed


def test_features_are_masked_means_per_layer_concatenated_over_layers_and_samples(bert, batches):
    expected = []
    with torch.no_grad():
        for inputs in batches:
            output = bert(**inputs)
            for sample in range(2):
                valid = int(inputs["attention_mask"][sample].sum())
                expected += [state[sample, :valid].mean(0) for state in output.hidden_states]
    torch.testing.assert_close(
        features(bert, batches), torch.cat(expected).float(), rtol=1e-6, atol=1e-6
    )
    assert features(bert, batches).shape == (2 * 2 * 3 * 16,)


def test_trajectory_gives_one_finite_point_per_snapshot_and_is_seeded(bert, batches):
    snapshots = [Snapshot("pretrained", 0, lambda: bert)] + [
        Snapshot(run, step, lambda step=step, seed=seed: _noisy(bert, seed, 0.05 * step))
        for run, seed in (("a", 1), ("b", 2))
        for step in (1, 2, 3)
    ]
    rows = trajectory(snapshots, batches, seed=0)
    assert [(row["run"], row["step"]) for row in rows] == [(s.run, s.step) for s in snapshots]
    assert all(list(row) == ["run", "step", "x", "y"] for row in rows)
    assert all(math.isfinite(row["x"]) and math.isfinite(row["y"]) for row in rows)
    assert trajectory(snapshots, batches, seed=0) == rows
    assert len({(row["x"], row["y"]) for row in rows}) == len(rows)


def test_embed_needs_three_points():
    with pytest.raises(CaldError, match="^a t-SNE trajectory needs at least 3 snapshots, got 2$"):
        embed(np.zeros((2, 5)), seed=0)


def test_snapshots_of_other_widths_are_refused(batches, make_teacher, bert):
    roberta = make_teacher("roberta")  # 4 heads but the same width: same size, so accepted
    deeper = copy.deepcopy(bert)
    deeper.backbone.encoder.layer.append(copy.deepcopy(deeper.backbone.encoder.layer[0]))
    snapshots = [Snapshot("x", i, lambda: bert) for i in range(2)] + [Snapshot("y", 0, lambda: deeper)]
    with pytest.raises(CaldError, match=r"different sizes \[192, 256\]: the runs must share"):
        trajectory(snapshots, batches)
    assert features(roberta, batches).shape == features(bert, batches).shape


def test_plot_is_written(tmp_path):
    rows = [
        {"run": "pretrained", "step": 0, "x": 0.0, "y": 0.0},
        {"run": "a", "step": 1, "x": 1.0, "y": 0.5},
        {"run": "a", "step": 2, "x": 2.0, "y": 1.5},
    ]
    path = plot_trajectory(rows, tmp_path / "trajectory.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
