"""Small tensor helpers shared by the task losses."""

from __future__ import annotations

import torch


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32: softmax and log-sum-exp in bf16/fp16 lose too much, while
    float64 (used by exact tests) is kept as it is."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))
