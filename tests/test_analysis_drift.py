"""Hidden-state drift: zero for identical weights, the cosine distance over valid positions otherwise."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cald_framework.analysis.drift import drift, plot_drift
from cald_framework.analysis.hidden import cosine_distance
from cald_framework.analysis.snapshots import Snapshot
from cald_framework.conversion import convert
from cald_framework.errors import CaldError


def _perturbed(model, layer: int, scale: float = 2.0, seed: int = 3):
    """A copy of ``model`` whose layer ``layer`` feed-forward output weights are shifted."""
    changed = copy.deepcopy(model)
    weight = changed.family.layers(changed.backbone)[layer].output.dense.weight
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed), dtype=weight.dtype)
    with torch.no_grad():
        weight.add_(scale * noise)
    return changed


def _snapshot(model, step: int, run: str = "run") -> Snapshot:
    return Snapshot(run, step, lambda: copy.deepcopy(model))


def test_identical_weights_drift_exactly_zero(bert, batches):
    rows = drift(bert, [_snapshot(bert, 5), _snapshot(bert, 10)], batches)
    assert [(row["run"], row["step"]) for row in rows] == [("run", 5), ("run", 10)]
    for row in rows:
        assert list(row) == ["run", "step", "mean", "layer_0", "layer_1", "layer_2"]
        assert [row[key] for key in ("mean", "layer_0", "layer_1", "layer_2")] == [0.0] * 4


def test_drift_starts_at_the_changed_layer_and_equals_the_mean_cosine_distance(bert, batches):
    changed = _perturbed(bert, layer=1)
    (row,) = drift(bert, [_snapshot(changed, 1)], batches)
    assert row["layer_0"] == 0.0 and row["layer_1"] == 0.0
    assert row["layer_2"] > 1e-3
    # reference: 1 - cos over every valid position of every batch
    distances = []
    with torch.no_grad():
        for inputs in batches:
            mask = inputs["attention_mask"].bool()
            ours, theirs = bert(**inputs).hidden_states[2], changed(**inputs).hidden_states[2]
            distances.append(1 - F.cosine_similarity(ours[mask], theirs[mask], dim=-1))
    expected = torch.cat(distances).mean().item()
    assert row["layer_2"] == pytest.approx(expected, rel=1e-12)
    assert row["mean"] == pytest.approx(expected / 2, rel=1e-12)


def test_padding_does_not_change_the_drift(bert, make_inputs):
    changed = _perturbed(bert, layer=0)
    padded = make_inputs("bert", seed=1)  # sample 1 has 3 padded positions
    one_by_one = [
        {name: value[i : i + 1, : int(padded["attention_mask"][i].sum())] for name, value in padded.items()}
        for i in range(2)
    ]
    (together,) = drift(bert, [_snapshot(changed, 1)], [padded])
    (apart,) = drift(bert, [_snapshot(changed, 1)], one_by_one)
    for key in ("layer_1", "layer_2", "mean"):
        assert together[key] == pytest.approx(apart[key], rel=1e-12)
        assert together[key] > 0


def test_cosine_distance_is_zero_for_equal_and_scaled_rows_and_one_for_orthogonal():
    rows = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.1, 0.2]], dtype=torch.float64)
    other = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-0.1, -0.2]], dtype=torch.float64)
    assert cosine_distance(rows, other).tolist() == pytest.approx([0.0, 1.0, 2.0], abs=1e-15)
    assert cosine_distance(rows, 7 * rows).tolist() == pytest.approx([0.0] * 3, abs=1e-15)


def test_students_compare_with_their_teacher_across_architectures(bert, batches, mixer_plugins):
    exact, _ = convert(bert, mixer_plugins["exact-attention"], {}, 40)
    low_rank, _ = convert(bert, mixer_plugins["low-rank"], {}, 40)
    same, other = drift(bert, [_snapshot(exact, 0), _snapshot(low_rank, 0)], batches)
    assert same["mean"] == pytest.approx(0.0, abs=1e-12)  # exact attention: the teacher itself
    assert same["layer_0"] == other["layer_0"] == 0.0  # embeddings are transferred unchanged
    assert other["layer_1"] > 1e-7 and other["layer_2"] > 1e-7


def test_a_model_of_other_depth_is_refused(bert, batches, make_teacher):
    deeper = make_teacher("bert")
    deeper.family.layers(deeper.backbone).append(copy.deepcopy(deeper.family.layers(deeper.backbone)[0]))
    with pytest.raises(CaldError, match="^run step 4 has 3 layers, the reference 2$"):
        drift(bert, [_snapshot(deeper, 4)], batches)


def test_other_valid_positions_are_refused(bert, batches):
    class Relabel(torch.nn.Module):
        """The bert model, but reporting every position as valid."""

        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(bert)

        def forward(self, **inputs):
            output = self.inner(**inputs)
            output.hidden_mask = torch.ones_like(output.hidden_mask)
            return output

    with pytest.raises(CaldError, match="^run step 2: its valid positions on batch 0 differ"):
        drift(bert, [Snapshot("run", 2, Relabel)], batches)


def test_plot_is_written(bert, batches, tmp_path):
    rows = drift(bert, [_snapshot(bert, 0), _snapshot(_perturbed(bert, 0), 3)], batches)
    path = plot_drift(rows, tmp_path / "drift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
