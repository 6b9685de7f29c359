"""Hidden states of a model over a fixed set of batches, reduced the ways the analyses need.

Every reduction looks at valid positions only (``CaldOutput.hidden_mask``), so padding never
moves a figure: the same samples give the same numbers whatever the batching.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..contracts import CaldOutput, TaskData

Batch = Mapping[str, torch.Tensor]


def sample_inputs(data: TaskData, count: int, seed: int, batch_size: int) -> list[Batch]:
    """``count`` rows drawn with ``seed`` from the evaluation split (else training), batched,
    as model inputs."""
    dataset = data.eval if data.eval is not None else data.train
    chosen = sorted(random.Random(seed).sample(range(len(dataset)), min(count, len(dataset))))
    return [
        data.collate([dataset[index] for index in chosen[start : start + batch_size]])["inputs"]
        for start in range(0, len(chosen), batch_size)
    ]


def outputs(model: nn.Module, batches: Sequence[Batch]) -> Iterator[CaldOutput]:
    """``model``'s output on each batch of model inputs, in eval and inference mode.

    Inputs are moved to the model's device; the model is left in eval mode.
    """
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            yield model(**{name: value.to(device) for name, value in batch.items()})


def valid_states(output: CaldOutput) -> list[torch.Tensor]:
    """Per hidden state (embeddings, then each layer): the valid positions packed, ``[n, D]``."""
    mask = output.hidden_mask
    return [state[mask] for state in output.hidden_states]


def cosine_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` per row of two ``[n, D]`` tensors, as ``|a/|a| - b/|b||^2 / 2``.

    The two are equal in exact arithmetic; this form is exactly 0 for identical rows, which
    ``1 - cos`` computed from a dot product is not after rounding.
    """
    dtype = torch.promote_types(first.dtype, torch.float32)
    a = F.normalize(first.to(dtype), dim=-1)
    b = F.normalize(second.to(dtype), dim=-1)
    return (a - b).pow(2).sum(-1) / 2


def pooled(output: CaldOutput) -> torch.Tensor:
    """Each sample's hidden states averaged over its valid positions: ``[B, L + 1, D]``."""
    weights = output.hidden_mask.to(output.hidden_states[0].dtype).unsqueeze(-1)
    counts = weights.sum(1).clamp_min(1)
    return torch.stack([(state * weights).sum(1) / counts for state in output.hidden_states], 1)

