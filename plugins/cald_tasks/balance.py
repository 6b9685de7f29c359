"""What a classification loss is divided by, which sets its weight against the distillation terms.

The paper's speech code summed the cross-entropy over the rows of a batch and divided every
gradient by the summed character length of the rows' transcripts (its CTC normalisation, kept
for classification). On SLURP that divides the classification loss by the transcript length
(30 to 40 characters); on VoxCeleb1, whose rows carry the placeholder transcript "123", by 3.
``loss_normalisation`` reproduces either; ``"none"`` keeps the plain mean over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .rows import RowProblem, Target

#: the column of a batch holding each row's transcript length in characters
TRANSCRIPT_LENGTH = "transcript_length"

LossNormalisation = Literal["none", "transcript_length"] | float


def normalised_loss(
    row_losses: torch.Tensor, batch: Mapping[str, Any], normalisation: LossNormalisation
) -> torch.Tensor:
    """One loss from the per-row losses ``[B]``: their mean, their sum over the summed
    transcript lengths, or their mean over a constant."""
    if normalisation == "none":
        return row_losses.mean()
    if normalisation == "transcript_length":
        lengths = batch[TRANSCRIPT_LENGTH].to(row_losses.dtype)
        return row_losses.sum() / lengths.sum().clamp(min=1.0)
    return row_losses.mean() / normalisation


@dataclass(frozen=True)
class WithTranscriptLength:
    """A target that also records the length, in characters, of the row's transcript."""

    target: Target
    transcript_column: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.target.columns, TRANSCRIPT_LENGTH)

    def prepare(self, row: dict[str, Any]) -> tuple[Any, int]:
        transcript = row[self.transcript_column]
        if not isinstance(transcript, str) or not transcript.strip():
            raise RowProblem(
                f"missing transcript in column {self.transcript_column!r} "
                "(loss_normalisation = 'transcript_length' divides the loss by its length)"
            )
        return self.target.prepare(row), len(transcript.strip())

    def encode(self, values: list[tuple[Any, int]]) -> dict[str, list[Any]]:
        encoded = self.target.encode([target for target, _ in values])
        encoded[TRANSCRIPT_LENGTH] = [length for _, length in values]
        return encoded
