"""Mamba-1: the selective state-space block, at the width of the attention it replaces.

``in_proj`` splits into the SSM branch and a gate; the SSM branch runs a causal depthwise
convolution, then a selective scan whose time step, input and output matrices (Δ, B, C) depend
on the token. Under ``init = "random"`` initialisation is Mamba's own (S4D-real ``A``,
log-uniform time steps), a well-conditioned recurrence.

Under ``init = "attention"`` (``expand = 1``; ``d_state`` defaults to ``d_model / num_heads``
and may be set to any rank): ``in_proj``'s ``x`` rows are the teacher's value rows, the
convolution an identity tap (so ``x = silu(V h + b_v)``) and ``out_proj`` its output
projection (see :mod:`.attention_init`). Mamba-1 has one ``B`` and one ``C`` per token, shared
by every channel and computed from ``x`` by ``x_proj``, so channel ``c`` reads
``sum_(s<=t) (C_t . B_s) decay_c(s->t) Δ_s,c x_s,c``: one score matrix for all heads. The
mapping gives it the attention's average head score ``q_t . k_s / num_heads = h_tᵀ M h_s``
with ``M = Qᵀ K / num_heads``, expressed on ``x`` through the least-squares inverse of ``V``
(``G = V⁺ᵀ M V⁺``) and cut to rank ``d_state`` by its singular value decomposition
``G ≈ U S Wᵀ``: ``C = S^½ Uᵀ x``, ``B = S^½ Wᵀ x``. With an invertible ``V`` and ``d_state``
at least the rank of ``M``, ``C_t . B_s`` equals the average head score on the pre-activation
``V h``; the SiLU, the per-head scores (one average instead of ``num_heads``), the softmax and
the rotary embeddings are what it does not reproduce. The time-step rows of ``x_proj`` keep
their usual init.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from cald_framework.contracts import AttentionProjections, MixerContext

from . import attention_init
from .conv import CausalConvSiLU
from .kernels import CudaKernels, cuda_kernels
from .padding import skip_padding, zero_padding
from .prefill import PrefillingBlock
from .scan import (
    discretise,
    read_out,
    selective_scan,
    selective_scan_with_state,
)
from .ssm_options import (
    DERIVED,
    SsmOptions,
    at_least_float32,
    no_decay,
    time_step_bias,
)


class MambaOptions(SsmOptions):
    """Options of the ``mamba`` mixer (Mamba's own defaults)."""

    RANDOM_GEOMETRY: ClassVar[dict[str, int]] = {"expand": 2, "d_state": 16}

    d_state: int | None = Field(
        None,
        gt=0,
        description="state size per channel (with init = attention, the rank of the shared "
        "score); " + DERIVED.format(random=16),
    )
    dt_rank: int | None = Field(
        None, gt=0, description="rank of the time-step projection; default ceil(d_model / 16)"
    )


@dataclass
class MambaState:
    """The constant-size generation state: the convolution window and the SSM state."""

    conv: torch.Tensor  #: ``[B, d_inner, d_conv]``
    ssm: torch.Tensor  #: ``[B, d_inner, d_state]``


def shared_score_maps(
    value: torch.Tensor, key: torch.Tensor, query: torch.Tensor, num_heads: int, rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_B, W_C)``, each ``[rank, d_model]``: ``(W_C x_t) . (W_B x_s)`` is the best rank-
    ``rank`` approximation of the average head score when ``x = V h`` (module doc).

    Computed in float64; ranks beyond ``d_model`` get zero rows.
    """
    value, key, query = (weight.detach().double().cpu() for weight in (value, key, query))
    inverse = torch.linalg.pinv(value)
    score = inverse.T @ (query.T @ key / num_heads) @ inverse
    left, singular, right = torch.linalg.svd(score)
    kept = min(rank, singular.shape[0])
    root = singular[:kept].sqrt().unsqueeze(-1)
    input_map = torch.zeros(rank, value.shape[1], dtype=torch.float64)
    output_map = torch.zeros_like(input_map)
    input_map[:kept] = root * right[:kept]
    output_map[:kept] = root * left[:, :kept].T
    return input_map, output_map


class MambaMixer(PrefillingBlock):
    """A Mamba-1 block as a causal sequence mixer, with a recurrent step for generation."""

    def __init__(self, options: MambaOptions, ctx: MixerContext):
        super().__init__()
        d_model = ctx.d_model
        if options.init == "attention":
            expand = attention_init.geometry(options, "expand", 1, "d_inner = d_model", "mamba")
            d_state = options.d_state or attention_init.attention_head_dim(ctx, "mamba")
        else:
            expand, d_state = options.expand, options.d_state
        d_inner = expand * d_model
        dt_rank = options.dt_rank or math.ceil(d_model / 16)
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=options.bias)
        self.conv1d = CausalConvSiLU(d_inner, options.d_conv, bias=options.conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=options.bias)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        rates = torch.arange(1, d_state + 1, dtype=torch.float32)
        self.A_log = no_decay(rates.log().repeat(d_inner, 1))
        self.D = no_decay(torch.ones(d_inner))
        self.dt_proj.bias = no_decay(time_step_bias(d_inner, options))
        if options.init == "attention" and ctx.projections is not None:
            with torch.no_grad():
                self._start_from_attention(ctx.projections, ctx.num_heads)

    def _start_from_attention(self, projections: AttentionProjections, num_heads: int) -> None:
        """``x`` rows := value rows, ``B``/``C`` rows of ``x_proj`` := the shared-score map."""
        d_model = self.out_proj.out_features
        value, key, query = attention_init.teacher_weights(projections, d_model, "mamba")
        self.in_proj.weight[:d_model].copy_(value)
        if self.in_proj.bias is not None:
            self.in_proj.bias[:d_model].zero_()
        attention_init.start_convolution_as_identity(self.conv1d, [projections.value], "mamba")
        input_map, output_map = shared_score_maps(value, key, query, num_heads, self.d_state)
        self.x_proj.weight[self.dt_rank :].copy_(torch.cat([input_map, output_map]))
        attention_init.copy_output(self.out_proj, projections.output)

    def _selective_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token-dependent time step (before its bias), ``B`` and ``C``."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def _run(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None, with_state: bool
    ) -> tuple[torch.Tensor, MambaState | None]:
        """The block on ``[B, T, D]``; padded positions (left or right) never touch the state:
        their convolution input is zero and their time step too (:func:`.skip_padding`)."""
        conv_input, gate = self.in_proj(hidden_states).chunk(2, dim=-1)
        conv_input = zero_padding(conv_input, padding_mask)
        x = self.conv1d(conv_input)
        dt, B, C = self._selective_inputs(x)
        dt = skip_padding(dt, padding_mask)
        kernels = None if with_state else cuda_kernels(x)
        if kernels is not None:
            return self.out_proj(self._kernel_scan(kernels, x, dt, B, C, gate)), None
        y, last = self._scan(x, dt, B, C, with_state)
        output = self.out_proj(y.to(x.dtype) * F.silu(gate))
        if last is None:
            return output, None
        return output, MambaState(self.conv1d.window_after(conv_input), last.to(x.dtype))

    def _scan(
        self, x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor, C: torch.Tensor, with_state: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The selective scan in PyTorch, in at least float32 like the CUDA kernel, with the
        state after the last step when ``with_state``."""
        x, dt, B, C, bias, A_log, D = at_least_float32(
            x, dt, B, C, self.dt_proj.bias, self.A_log, self.D
        )
        arguments = (x, F.softplus(dt + bias), -torch.exp(A_log), B, C)
        if with_state:
            y, last = selective_scan_with_state(*arguments)
        else:
            y, last = selective_scan(*arguments), None
        return y + x * D, last

    def _kernel_scan(
        self, kernels: CudaKernels, x: Tensor, dt: Tensor, B: Tensor, C: Tensor, gate: Tensor
    ) -> Tensor:
        """mamba-ssm's fused scan (gate included); it takes channels-first tensors."""
        mixed = kernels.selective_scan(
            x.transpose(1, 2),
            dt.transpose(1, 2),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=gate.transpose(1, 2),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return mixed.transpose(1, 2)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> MambaState:
        window = self.conv1d.init_window(batch_size, device, dtype)
        ssm = torch.zeros(batch_size, self.D.shape[0], self.d_state, device=device, dtype=dtype)
        return MambaState(conv=window, ssm=ssm)

    def step(
        self, hidden_state: torch.Tensor, state: MambaState
    ) -> tuple[torch.Tensor, MambaState]:
        """One token ``[B, D]`` through the block: the recurrence the scan evaluates in parallel."""
        x, gate = self.in_proj(hidden_state).chunk(2, dim=-1)
        x, window = self.conv1d.step(x, state.conv)
        dt, B, C = self._selective_inputs(x)
        delta = F.softplus(dt + self.dt_proj.bias)
        decay, inputs = discretise(x, delta, -torch.exp(self.A_log), B)
        ssm = decay * state.ssm + inputs
        mixed = read_out(ssm, C) + x * self.D
        return self.out_proj(mixed * F.silu(gate)), MambaState(conv=window, ssm=ssm)
