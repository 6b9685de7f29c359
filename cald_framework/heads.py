"""Task heads, built from a :class:`HeadSpec` alone so that saved models reload without a task."""

from __future__ import annotations

import torch
from torch import nn

from .contracts import HeadSpec
from .errors import CaldError


class MeanPoolClassifier(nn.Module):
    """A linear layer on the mean of the valid positions: one prediction per sequence."""

    def __init__(self, d_model: int, num_labels: int):
        super().__init__()
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(features.dtype)
        pooled = (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.classifier(pooled)


class FirstTokenClassifier(nn.Module):
    """RoBERTa's sequence head: the first position (``<s>``) through dropout, a dense layer,
    tanh, dropout and a linear layer (``RobertaClassificationHead``, at RoBERTa's 0.1 dropout).
    The paper's NLP code used it; a student converted from a teacher with it starts from the
    teacher's head."""

    dropout_rate = 0.1

    def __init__(self, d_model: int, num_labels: int):
        super().__init__()
        self.dropout = nn.Dropout(self.dropout_rate)
        self.dense = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, num_labels)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.dense(self.dropout(features[:, 0])))
        return self.out_proj(self.dropout(hidden))


class TokenClassifier(nn.Module):
    """A linear layer at every position (CTC, frame or token labels)."""

    def __init__(self, d_model: int, num_labels: int):
        super().__init__()
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


_HEADS: dict[str, type[nn.Module]] = {
    "classification": MeanPoolClassifier,
    "first_token_classification": FirstTokenClassifier,
    "token_classification": TokenClassifier,
}


def build_head(spec: HeadSpec, d_model: int) -> nn.Module | None:
    """The head for ``spec`` on features of width ``d_model``; ``None`` for ``causal_lm``.

    Every head maps ``(features [B, T, D], mask [B, T])`` to logits.
    """
    if spec.kind == "causal_lm":
        return None
    if spec.kind not in _HEADS:
        raise CaldError(
            f"unknown head kind {spec.kind!r}; expected causal_lm or one of {sorted(_HEADS)}"
        )
    if spec.num_labels < 1:
        raise CaldError(f"a {spec.kind} head needs num_labels >= 1, got {spec.num_labels}")
    return _HEADS[spec.kind](d_model, spec.num_labels)
