"""Mamba-1: the selective state-space block, at the width of the attention it replaces.

``in_proj`` splits into the SSM branch and a gate; the SSM branch runs a causal depthwise
convolution, then a selective scan whose time step, input and output matrices (Δ, B, C) depend
on the token. Initialisation is Mamba's own (S4D-real ``A``, log-uniform time steps), so a
converted model starts from a well-conditioned recurrence rather than from the teacher's
attention, which has no counterpart here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from cald_framework.contracts import MixerContext

from .conv import CausalConvSiLU
from .kernels import CudaKernels, cuda_kernels
from .padding import zero_padding
from .scan import discretise, read_out, selective_scan
from .ssm_options import (
    SsmOptions,
    at_least_float32,
    no_decay,
    time_step_bias,
)


class MambaOptions(SsmOptions):
    """Options of the ``mamba`` mixer (Mamba's own defaults)."""

    d_state: int = Field(16, gt=0, description="state size per channel")
    dt_rank: int | None = Field(
        None, gt=0, description="rank of the time-step projection; default ceil(d_model / 16)"
    )


@dataclass
class MambaState:
    """The constant-size generation state: the convolution window and the SSM state."""

    conv: torch.Tensor  #: ``[B, d_inner, d_conv]``
    ssm: torch.Tensor  #: ``[B, d_inner, d_state]``


class MambaMixer(nn.Module):
    """A Mamba-1 block as a causal sequence mixer, with a recurrent step for generation."""

    def __init__(self, options: MambaOptions, ctx: MixerContext):
        super().__init__()
        d_model = ctx.d_model
        d_inner = options.expand * d_model
        dt_rank = options.dt_rank or math.ceil(d_model / 16)
        self.d_state = options.d_state
        self.dt_rank = dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=options.bias)
        self.conv1d = CausalConvSiLU(d_inner, options.d_conv, bias=options.conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * options.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=options.bias)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        rates = torch.arange(1, options.d_state + 1, dtype=torch.float32)
        self.A_log = no_decay(rates.log().repeat(d_inner, 1))
        self.D = no_decay(torch.ones(d_inner))
        self.dt_proj.bias = no_decay(time_step_bias(d_inner, options))

    def _selective_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token-dependent time step (before its bias), ``B`` and ``C``."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, gate = self.in_proj(zero_padding(hidden_states, padding_mask)).chunk(2, dim=-1)
        x = self.conv1d(x)
        dt, B, C = self._selective_inputs(x)
        kernels = cuda_kernels(x)
        if kernels is None:
            mixed = self._scan(x, dt, B, C).to(x.dtype) * F.silu(gate)
        else:
            mixed = self._kernel_scan(kernels, x, dt, B, C, gate)
        return self.out_proj(mixed)

    def _scan(
        self, x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor, C: torch.Tensor
    ) -> torch.Tensor:
        """The selective scan in PyTorch, in at least float32 like the CUDA kernel."""
        x, dt, B, C, bias, A_log, D = at_least_float32(
            x, dt, B, C, self.dt_proj.bias, self.A_log, self.D
        )
        return selective_scan(x, F.softplus(dt + bias), -torch.exp(A_log), B, C) + x * D

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
