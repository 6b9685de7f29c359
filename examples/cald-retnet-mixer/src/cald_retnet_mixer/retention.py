"""Multi-scale retention (Sun et al., 2023, "Retentive Network") as a causal sequence mixer.

Head ``h`` keeps a fixed decay ``γ_h = 1 - 2^(-5-h)``, so the heads cover several time scales.
The output at step ``n`` is ``Σ_(m<=n) γ^(n-m) (q_n · k_m) v_m``, normalised per head (group
norm) and gated by ``swish(x W_G)``. Training uses the chunkwise form (quadratic only inside
chunks, one state per chunk between them); generation uses the recurrent form with a state of
``heads x head_dim x head_dim`` per sequence. With ``init = "attention"`` (the default) the
queries, keys, values and output projection are the teacher's own, taken from
``MixerContext.projections``, so the student starts from the attention it replaces; with
``init = "random"`` they are fresh layers of the same shapes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cald_framework.contracts import MixerContext, PluginOptions
from cald_framework.errors import SpecError


class RetentionOptions(PluginOptions):
    """Options of the ``retention`` mixer."""

    chunk_size: int = Field(64, gt=0, description="chunk length of the chunkwise training form")
    rotary: bool = Field(True, description="rotate queries and keys by position (RetNet's Θ)")
    rotary_base: float = Field(10000.0, gt=1, description="base of the rotation frequencies")
    init: Literal["attention", "random"] = Field(
        "attention",
        description="attention: queries, keys, values and output copied from the replaced "
        "attention; random: fresh projections",
    )


@dataclass
class RetentionState:
    """The recurrent state: the decayed sum of ``kᵀ v`` per head, and the next position."""

    memory: torch.Tensor  #: ``[B, heads, head_dim, head_dim]``
    position: int


def head_decays(num_heads: int) -> torch.Tensor:
    """``log γ_h`` with ``γ_h = 1 - 2^(-5-h)``: from fast (h = 0) to slow decays."""
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))))


def _copy_or_new(linear: nn.Linear | None, width: int, bias: bool) -> nn.Linear:
    """The teacher's projection, copied so the teacher keeps its own; a fresh one without it."""
    return nn.Linear(width, width, bias=bias) if linear is None else copy.deepcopy(linear)


class RetentionMixer(nn.Module):
    """Multi-scale retention over ``ctx.num_heads`` heads at the teacher's width."""

    def __init__(self, options: RetentionOptions, ctx: MixerContext):
        super().__init__()
        width, heads = ctx.d_model, ctx.num_heads
        if width % heads:
            raise SpecError(f"retention: num_heads {heads} must divide d_model {width}")
        head_dim = width // heads
        if options.rotary and head_dim % 2:
            raise SpecError(f"retention: rotary needs an even head_dim, got {head_dim}")
        self.heads, self.chunk_size = heads, options.chunk_size
        teacher = ctx.projections if options.init == "attention" else None
        self.query = _copy_or_new(teacher and teacher.query, width, ctx.projection_bias)
        self.key = _copy_or_new(teacher and teacher.key, width, ctx.projection_bias)
        self.value = _copy_or_new(teacher and teacher.value, width, ctx.projection_bias)
        keeps_output = ctx.output_projection if teacher is None else teacher.output is not None
        self.output = (
            _copy_or_new(teacher and teacher.output, width, ctx.projection_bias)
            if keeps_output
            else None
        )
        self.gate = nn.Linear(width, width)
        self.norm = nn.GroupNorm(heads, width)
        self.register_buffer("log_decay", head_decays(heads).float(), persistent=False)
        frequencies = options.rotary_base ** (-torch.arange(0, head_dim, 2) / head_dim)
        self.register_buffer(
            "frequencies", frequencies if options.rotary else torch.zeros(0), persistent=False
        )

    def _rotate(self, states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs ``(i, i + d/2)`` of ``[B, H, T, d]`` by ``position * frequency``."""
        if not self.frequencies.numel():
            return states
        angles = positions.to(states.dtype)[:, None] * self.frequencies.to(states.dtype)
        cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
        first, second = states.chunk(2, dim=-1)
        return states * cos + torch.cat([-second, first], dim=-1) * sin

    def _heads(
        self, hidden: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated, scaled queries and rotated keys, and values: ``[B, H, T, head_dim]``."""
        batch, time, width = hidden.shape

        def split(states: torch.Tensor) -> torch.Tensor:
            return states.view(batch, time, self.heads, -1).transpose(1, 2)

        query = self._rotate(split(self.query(hidden)), positions)
        key = self._rotate(split(self.key(hidden)), positions)
        return query / math.sqrt(width // self.heads), key, split(self.value(hidden))

    def _finish(self, retained: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Group norm per head, the swish gate, and the output projection (where kept)."""
        batch, heads, time, head_dim = retained.shape
        merged = retained.transpose(1, 2).reshape(batch * time, heads * head_dim)
        normed = self.norm(merged).view(batch, time, -1)
        gated = F.silu(self.gate(hidden)) * normed
        return gated if self.output is None else self.output(gated)

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if padding_mask is not None:  # right padding: causal, so only for a clean computation
            hidden_states = hidden_states * padding_mask.unsqueeze(-1).to(hidden_states.dtype)
        positions = torch.arange(hidden_states.shape[1], device=hidden_states.device)
        query, key, value = self._heads(hidden_states, positions)
        retained = chunkwise_retention(query, key, value, self.log_decay, self.chunk_size)
        return self._finish(retained, hidden_states)

    def init_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> RetentionState:
        head_dim = self.query.out_features // self.heads
        shape = (batch_size, self.heads, head_dim, head_dim)
        return RetentionState(torch.zeros(shape, device=device, dtype=dtype), position=0)

    def step(
        self, hidden_state: torch.Tensor, state: RetentionState
    ) -> tuple[torch.Tensor, RetentionState]:
        """One token ``[B, D]``: ``S_n = γ S_(n-1) + k_nᵀ v_n`` and ``o_n = q_n S_n``."""
        hidden = hidden_state.unsqueeze(1)
        position = torch.tensor([state.position], device=hidden.device)
        query, key, value = self._heads(hidden, position)
        decay = self.log_decay.exp().to(hidden.dtype)[:, None, None]
        memory = decay * state.memory + key.transpose(-1, -2) @ value
        output = self._finish(query @ memory, hidden)[:, 0]
        return output, RetentionState(memory, state.position + 1)


def chunkwise_retention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    log_decay: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """``Σ_(m<=n) γ^(n-m) (q_n · k_m) v_m`` for ``[B, H, T, d]`` inputs and ``log γ [H]``.

    Inside a chunk it is the masked quadratic form; the state entering each chunk is the
    decayed sum of the earlier chunks' ``kᵀ v``, so the cost is linear in ``T``. Every power
    of ``γ`` has a non-negative exponent, so nothing can overflow.
    """
    batch, heads, time, head_dim = query.shape
    pad = -time % chunk_size
    chunks = (time + pad) // chunk_size

    def by_chunk(states: torch.Tensor) -> torch.Tensor:
        return F.pad(states, (0, 0, 0, pad)).view(batch, heads, chunks, chunk_size, -1)

    query, key, value = by_chunk(query), by_chunk(key), by_chunk(value)
    rate = log_decay.to(query.dtype).view(heads, 1, 1)  # broadcasts over [H, ., .]

    def powers(exponents: torch.Tensor) -> torch.Tensor:
        """``γ_h^e`` for the non-negative ``exponents`` and 0 where they are negative."""
        return torch.where(exponents >= 0, (exponents.clamp(min=0) * rate).exp(), 0.0)

    steps = torch.arange(chunk_size, device=query.device, dtype=query.dtype)
    within = ((query @ key.transpose(-1, -2)) * powers(steps[:, None] - steps)[:, None]) @ value

    # the state each chunk leaves behind, and the state entering each chunk
    to_end = powers(chunk_size - 1 - steps[None, :])[..., None]  # [H, 1, L, 1]
    left = (key * to_end).transpose(-1, -2) @ value  # [B, H, c, d, d]
    order = torch.arange(chunks, device=query.device, dtype=query.dtype)
    between = powers(chunk_size * (order[:, None] - 1 - order))  # [H, c, c]
    entering = (between @ left.flatten(-2)).view_as(left)
    from_start = powers(steps[None, :] + 1)[..., None]  # [H, 1, L, 1]
    across = (query * from_start) @ entering

    retained = (within + across).view(batch, heads, chunks * chunk_size, head_dim)
    return retained[:, :, :time]
