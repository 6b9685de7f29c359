"""The host's heads by value: which positions each prediction comes from."""

from __future__ import annotations

import torch

from cald_framework.contracts import HeadSpec
from cald_framework.heads import build_head


def _features(frames: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, frames, 4, generator=generator, dtype=torch.float64)
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, 5:] = False
    return features, mask


def test_token_logits_at_frame_t_come_from_the_features_at_frame_t() -> None:
    torch.manual_seed(0)
    head = build_head(HeadSpec("token_classification", 5), 4).double()
    features, mask = _features()
    logits = head(features, mask)
    assert logits.shape == (2, 7, 5)
    for t in range(features.shape[1]):
        alone = head(features[:, t : t + 1], mask[:, t : t + 1])[:, 0]
        torch.testing.assert_close(logits[:, t], alone, rtol=0, atol=1e-12)
        changed = features.clone()
        changed[:, t] += 1.0
        moved = (head(changed, mask) - logits).abs().amax(dim=(0, 2)) > 0
        assert moved.nonzero().flatten().tolist() == [t]


def test_sequence_logits_pool_the_valid_frames_only() -> None:
    torch.manual_seed(0)
    head = build_head(HeadSpec("classification", 3), 4).double()
    features, mask = _features()
    logits = head(features, mask)
    changed = features.clone()
    changed[1, 5:] += 100.0  # padding of the second row
    torch.testing.assert_close(head(changed, mask), logits, rtol=0, atol=0)
    valid = head(features[1:, :5], mask[1:, :5])
    torch.testing.assert_close(logits[1:], valid, rtol=0, atol=1e-12)
