"""Linformer self-attention: keys and values are projected along the sequence to a fixed rank k.

With ``init = "random"`` this follows the CALD paper's code: the projected keys are ``E[:n]ᵀ K[:n] / sqrt(n)`` (values alike
with F), where ``n`` is each sample's valid length, so padding never enters the projection and
the feature scale does not grow with the length. One E acts on the full hidden width, shared by
all heads. With ``E = F = sqrt(n)·I`` and ``k = n`` this is exactly softmax attention.

The default, ``init = "attention"``, uses ``projection = "pooled"`` (see :mod:`.linformer_slots`),
with which a fixed E can reproduce attention: E and F start as its pooling layout, so a
converted layer equals the attention it replaces while each valid length fits in k and pools it
beyond. On the quickstart this starts the student at its teacher's accuracy (the paper's random
E and F start it at chance). The queries, keys, values and output are always the teacher's.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from cald_framework.contracts import MixerContext
from cald_framework.errors import DataError, SpecError

from .initialisation import InitName, InitOptions
from .linformer_slots import ProjectionName, pooling_layout, slot_bias, slot_divisor
from .padding import valid_lengths, zero_padding

#: the key in ``MixerContext.shared`` of the projection that ``share = "layer"`` uses everywhere
SHARED_KEY = "linformer"
#: the largest k taken beyond ``max_length``: slots past the longest sequence stay empty, so a
#: k above both is a mistake, while k = 256 over 64-token reviews merely wastes a little
K_CAP = 4096
#: the most values one E (or F) may hold, ``max_length × k``: 2**28, 1 GiB in fp32 per layer
PROJECTION_CAP = 2**28


class LinformerOptions(InitOptions):
    """Options of the ``linformer`` mixer; ``init`` chooses how E and F start."""

    k: int = Field(256, gt=0, description="rank of the sequence projections E and F")
    share: Literal["none", "kv", "layer"] = Field(
        "none",
        description="none: E and F per layer; kv: E = F per layer; layer: one E = F for all layers",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention probabilities")
    init: InitName = Field(
        "attention",
        description="attention: E and F start as the pooled layout, so a converted layer equals "
        "the attention it replaces while valid lengths fit in k; random: N(0, 1), the paper's",
    )
    projection: ProjectionName | None = Field(
        None,
        description="paper: E[:n]ᵀK/sqrt(n) over all k slots; pooled: slot j averages the "
        "positions i with i mod k = j, weighted by their count in the softmax, empty slots "
        "masked; default: pooled with init = attention, paper with init = random",
    )

    @model_validator(mode="before")
    @classmethod
    def _projection_of_init(cls, data: Any) -> Any:
        """Fill an unset ``projection`` with the one ``init`` works with."""
        if not isinstance(data, dict) or data.get("projection") is not None:
            return data
        pooled = data.get("init", "attention") == "attention"
        return {**data, "projection": "pooled" if pooled else "paper"}

    @model_validator(mode="after")
    def _attention_init_needs_pooling(self) -> LinformerOptions:
        if self.init == "attention" and self.projection != "pooled":
            raise ValueError(
                'init = "attention" needs projection = "pooled" (the paper\'s projection cannot '
                "reproduce attention with a fixed E)"
            )
        return self


def linformer_limits(options: LinformerOptions, max_length: int | None) -> dict[str, str]:
    """``k`` refused where it exceeds both ``max_length`` and :data:`K_CAP`, or where E and F
    would hold more than :data:`PROJECTION_CAP` values each (the :class:`SizeLimits` hook)."""
    k = options.k
    if k > max(max_length or 0, K_CAP):
        beyond = f"max_length ({max_length}) and {K_CAP}" if max_length else f"{K_CAP}"
        return {"k": f"k = {k} exceeds {beyond}: slots past the longest sequence stay empty"}
    if max_length and max_length * k > PROJECTION_CAP:
        return {
            "k": f"max_length × k = {max_length * k:,} values in each of E and F exceeds "
            f"{PROJECTION_CAP:,}; lower k or max_length"
        }
    return {}


class SequenceProjection(nn.Module):
    """E (or F): maps the valid rows of ``[B, T, D]`` to ``[B, k, D]``, each slot scaled as
    ``projection`` says (``1/sqrt(n)`` in the paper's)."""

    def __init__(
        self,
        max_length: int,
        k: int,
        projection: ProjectionName = "paper",
        init: InitName = "random",
    ):
        super().__init__()
        start = torch.randn(max_length, k) if init == "random" else pooling_layout(max_length, k)
        self.weight = nn.Parameter(start)
        self.projection = projection

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        time = states.shape[1]
        max_length = self.weight.shape[0]
        if time > max_length:
            raise DataError(
                f"linformer: sequence of length {time} is longer than max_length {max_length}"
            )
        lengths = valid_lengths(padding_mask, states)
        projected = self.weight[:time].T @ zero_padding(states, padding_mask)
        k = self.weight.shape[1]
        return projected / slot_divisor(self.projection, lengths, k, states.dtype)


def _reused_linear(linear: nn.Linear | None, d_model: int, role: str, bias: bool) -> nn.Linear:
    """A copy of the teacher's projection (so the teacher keeps its own), or a fresh one."""
    if linear is None:
        return nn.Linear(d_model, d_model, bias=bias)
    if (linear.in_features, linear.out_features) != (d_model, d_model):
        raise SpecError(
            f"linformer: the {role} projection maps {linear.in_features} -> "
            f"{linear.out_features} features, expected {d_model} -> {d_model}"
        )
    return copy.deepcopy(linear)


def _new_projection(options: LinformerOptions, ctx: MixerContext) -> SequenceProjection:
    return SequenceProjection(ctx.max_length, options.k, options.projection, options.init)


def _shared_projection(options: LinformerOptions, ctx: MixerContext) -> SequenceProjection:
    """The single projection of ``share = "layer"``: the first layer creates it, others reuse it."""
    if SHARED_KEY not in ctx.shared:
        ctx.shared[SHARED_KEY] = _new_projection(options, ctx)
    projection = ctx.shared[SHARED_KEY]
    expected = (ctx.max_length, options.k)
    if tuple(projection.weight.shape) != expected:
        raise SpecError(
            f"linformer: the shared projection has shape {tuple(projection.weight.shape)}, "
            f"layer {ctx.layer_index} needs {expected} (max_length, k)"
        )
    return projection


class LinformerMixer(nn.Module):
    """Multi-head attention over ``k`` projected keys/values: linear in the sequence length."""

    def __init__(self, options: LinformerOptions, ctx: MixerContext):
        super().__init__()
        if ctx.d_model % ctx.num_heads:
            raise SpecError(
                f"linformer: num_heads {ctx.num_heads} must divide d_model {ctx.d_model}"
            )
        if ctx.max_length <= 0:
            raise SpecError(
                f"linformer: needs the longest sequence length to size E and F, "
                f"got max_length {ctx.max_length}"
            )
        refused = linformer_limits(options, ctx.max_length)
        if refused:
            raise SpecError(f"linformer: {refused['k']}")
        self.num_heads = ctx.num_heads
        self.dropout = options.dropout
        self.pooled = options.projection == "pooled"
        teacher = ctx.projections
        self.query = _reused_linear(
            teacher and teacher.query, ctx.d_model, "query", ctx.projection_bias
        )
        self.key = _reused_linear(teacher and teacher.key, ctx.d_model, "key", ctx.projection_bias)
        self.value = _reused_linear(
            teacher and teacher.value, ctx.d_model, "value", ctx.projection_bias
        )
        has_output = ctx.output_projection if teacher is None else teacher.output is not None
        self.output = (
            _reused_linear(teacher and teacher.output, ctx.d_model, "output", ctx.projection_bias)
            if has_output
            else None
        )
        self._set_projections(options, ctx)

    def _set_projections(self, options: LinformerOptions, ctx: MixerContext) -> None:
        """Register E and F as this sharing mode owns them; shared ones are plain references.

        A reference set with ``object.__setattr__`` is not a submodule, so a tensor used in two
        places appears once in the state dict (under this layer, or under the model's shared dict).
        """
        if options.share == "layer":
            shared = _shared_projection(options, ctx)
            object.__setattr__(self, "key_projection", shared)
            object.__setattr__(self, "value_projection", shared)
            return
        self.key_projection = _new_projection(options, ctx)
        if options.share == "kv":
            object.__setattr__(self, "value_projection", self.key_projection)
        else:
            self.value_projection = _new_projection(options, ctx)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, time, width = states.shape
        return states.view(batch, time, self.num_heads, width // self.num_heads).transpose(1, 2)

    def _slot_bias(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The pooled formulation's log-count logits (``None`` in the paper's)."""
        if not self.pooled:
            return None
        lengths = valid_lengths(padding_mask, hidden_states)
        return slot_bias(lengths, self.key_projection.weight.shape[1], hidden_states.dtype)

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        keys = self.key_projection(self.key(hidden_states), padding_mask)
        values = self.value_projection(self.value(hidden_states), padding_mask)
        mixed = F.scaled_dot_product_attention(
            self._split_heads(self.query(hidden_states)),
            self._split_heads(keys),
            self._split_heads(values),
            attn_mask=self._slot_bias(hidden_states, padding_mask),
            dropout_p=self.dropout if self.training else 0.0,
        )
        mixed = mixed.transpose(1, 2).flatten(2)
        return mixed if self.output is None else self.output(mixed)
