"""How Linformer's k slots summarise a sequence: the paper's scaled sums, or pooled means.

``paper``: slot ``j`` holds ``Σ_(i<n) E[i, j] x_i / sqrt(n)`` and every slot is attended. No
fixed E reproduces attention with it, because of the per-length scale and the slots that no
position fills.

``pooled``: position ``i`` belongs to slot ``i mod k``. Slot ``j`` holds
``Σ_(i<n) E[i, j] x_i / c_j(n)``, where ``c_j(n)`` is the number of valid positions it pools; its
attention logit gets ``+ log c_j(n)`` and an empty slot (``c_j(n) = 0``) is masked out. With E the
layout's 0/1 matrix (``init = "attention"``) each slot is the mean key/value of its positions
and carries their softmax mass: exactly attention while ``n <= k``, a pooling of it beyond. E
stays a free parameter; the counts depend on the lengths only. ``pooled`` is meant for that
start: with a random N(0, 1) E its slots are sums rather than means, of far larger scale.
"""

from __future__ import annotations

from typing import Literal

import torch

ProjectionName = Literal["paper", "pooled"]


def pooling_layout(max_length: int, k: int) -> torch.Tensor:
    """``[max_length, k]`` with ``E[i, i mod k] = 1``: the identity on the first k positions."""
    positions = torch.arange(max_length)
    return (positions[:, None] % k == torch.arange(k)).float()


def slot_counts(lengths: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` number of positions ``i < n`` with ``i mod k = j``, for the ``[B]`` lengths n."""
    slots = torch.arange(k, device=lengths.device)
    return ((lengths[:, None] - slots + k - 1) // k).clamp(min=0)


def slot_divisor(
    projection: ProjectionName, lengths: torch.Tensor, k: int, dtype: torch.dtype
) -> torch.Tensor:
    """What each projected slot is divided by, broadcastable to ``[B, k, D]``."""
    if projection == "paper":
        return lengths.to(dtype).sqrt()[:, None, None]
    return slot_counts(lengths, k).clamp(min=1).to(dtype)[:, :, None]


def slot_bias(lengths: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, 1, k]`` logit bias of ``pooled``: ``log c_j(n)``, ``-inf`` for empty slots."""
    return slot_counts(lengths, k).to(dtype).log()[:, None, None, :]
