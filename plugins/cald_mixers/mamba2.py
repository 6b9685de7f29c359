"""Mamba2: the SSD block (scalar decay per head, shared B/C per group) with a gated RMSNorm.

``in_proj`` yields the gate ``z``, the convolved branch ``x | B | C`` and one time step per
head; the scan output is normalised after gating (``norm(y * silu(z))``, per group) before
``out_proj``, as in Mamba2. The initialisation is Mamba2's own under ``init = "random"``.

Under ``init = "attention"`` the geometry follows the attention: ``expand = 1``, one group per
attention head (``ngroups = num_heads``) and ``headdim = d_state = d_model / num_heads``. Then
``in_proj``'s ``x``, ``B`` and ``C`` rows are the teacher's value, key and query rows and
``out_proj`` is its output projection (see :mod:`.attention_init`), so head ``h`` computes

    y_t = sum_(s<=t) (C_t . B_s) exp(A_h sum_(s<r<=t) dt_r) dt_s x_s + D_h x_t,

with ``x, B, C = silu(V h + b_v), silu(K h + b_k), silu(Q h + b_q)``: a causal linear attention
of head ``h`` with a learned decay and time step, gated and normalised per head before
``out_proj``. Rotary embeddings and the softmax are what it does not reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from cald_framework.contracts import AttentionProjections, MixerContext
from cald_framework.errors import SpecError

from .attention_init import (
    attention_head_dim,
    copy_output,
    geometry,
    start_convolution_as_identity,
    teacher_weights,
)
from .conv import CausalConvSiLU
from .kernels import CudaKernels, cuda_kernels
from .padding import skip_padding, zero_padding
from .prefill import PrefillingBlock
from .ssd import ssd_scan
from .ssm_options import (
    DERIVED,
    SsmOptions,
    at_least_float32,
    no_decay,
    time_step_bias,
)


class Mamba2Options(SsmOptions):
    """Options of the ``mamba2`` mixer (Mamba2's own defaults)."""

    RANDOM_GEOMETRY: ClassVar[dict[str, int]] = {
        "expand": 2, "d_state": 128, "headdim": 64, "ngroups": 1,
    }

    d_state: int | None = Field(
        None, gt=0, description="state size per head; " + DERIVED.format(random=128)
    )
    headdim: int | None = Field(
        None,
        gt=0,
        description="channels per head; must divide expand * d_model; "
        + DERIVED.format(random=64),
    )
    ngroups: int | None = Field(
        None,
        gt=0,
        description="groups sharing B and C; must divide the heads; " + DERIVED.format(random=1),
    )
    chunk_size: int = Field(256, gt=0, description="chunk length of the SSD scan")
    A_init_range: tuple[float, float] = Field(
        (1.0, 16.0), description="range of the initial decay rates -A (uniform)"
    )

    @model_validator(mode="after")
    def _positive_decay_range(self) -> Mamba2Options:
        low, high = self.A_init_range
        if not 0 < low <= high:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {self.A_init_range}")
        return self


@dataclass
class Mamba2State:
    """The constant-size generation state: the convolution window and the SSM state."""

    conv: torch.Tensor  #: ``[B, d_inner + 2 * ngroups * d_state, d_conv]``
    ssm: torch.Tensor  #: ``[B, heads, headdim, d_state]``


class GatedRMSNorm(nn.Module):
    """``RMSNorm(y * silu(z))`` over groups of channels, with a learned scale (Mamba2's norm)."""

    def __init__(self, width: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.groups = groups
        self.eps = eps

    def forward(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype
        gated = (y * F.silu(gate)).to(torch.promote_types(dtype, torch.float32))
        grouped = gated.unflatten(-1, (self.groups, -1))
        normed = grouped * torch.rsqrt(grouped.square().mean(-1, keepdim=True) + self.eps)
        return normed.flatten(-2).to(dtype) * self.weight


@dataclass(frozen=True)
class Mamba2Geometry:
    """The resolved shape of one Mamba2 block."""

    d_inner: int
    heads: int
    headdim: int
    d_state: int
    ngroups: int

    @classmethod
    def of(cls, mixer: str, ctx: MixerContext, options: Mamba2Options) -> Mamba2Geometry:
        """The options' shape, derived from the attention under attention init; refuses head
        and group counts that do not divide evenly."""
        if options.init == "attention":
            head_dim = attention_head_dim(ctx, mixer)
            why = f"d_model / num_heads = {ctx.d_model} / {ctx.num_heads}"
            expand = geometry(options, "expand", 1, "d_inner = d_model", mixer)
            headdim = geometry(options, "headdim", head_dim, why, mixer)
            d_state = geometry(options, "d_state", head_dim, why, mixer)
            ngroups = geometry(options, "ngroups", ctx.num_heads, "one group per head", mixer)
        else:
            expand, headdim = options.expand, options.headdim
            d_state, ngroups = options.d_state, options.ngroups
        d_inner = expand * ctx.d_model
        if d_inner % headdim:
            raise SpecError(
                f"{mixer}: headdim {headdim} must divide expand * d_model = "
                f"{expand} * {ctx.d_model} = {d_inner}"
            )
        heads = d_inner // headdim
        if heads % ngroups:
            raise SpecError(
                f"{mixer}: ngroups {ngroups} must divide the number of heads "
                f"(expand * d_model / headdim = {heads})"
            )
        return cls(d_inner, heads, headdim, d_state, ngroups)


class Mamba2Mixer(PrefillingBlock):
    """A Mamba2 block as a causal sequence mixer, with a recurrent step for generation."""

    def __init__(
        self,
        options: Mamba2Options,
        ctx: MixerContext,
        name: str = "mamba2",
        output_scale: float = 1.0,
    ):
        """``output_scale`` multiplies the attention-derived output (BiMamba2 halves each
        direction); it has no effect under random init."""
        super().__init__()
        shape = Mamba2Geometry.of(name, ctx, options)
        d_inner, heads = shape.d_inner, shape.heads
        self.headdim, self.d_state, self.ngroups = shape.headdim, shape.d_state, shape.ngroups
        self.chunk_size = options.chunk_size
        conv_width = d_inner + 2 * shape.ngroups * shape.d_state
        self.in_proj = nn.Linear(ctx.d_model, d_inner + conv_width + heads, bias=options.bias)
        self.conv1d = CausalConvSiLU(conv_width, options.d_conv, bias=options.conv_bias)
        self.dt_bias = no_decay(time_step_bias(heads, options))
        self.A_log = no_decay(torch.empty(heads).uniform_(*options.A_init_range).log())
        self.D = no_decay(torch.ones(heads))
        self.norm = GatedRMSNorm(d_inner, shape.ngroups)
        self.out_proj = nn.Linear(d_inner, ctx.d_model, bias=options.bias)
        if options.init == "attention" and ctx.projections is not None:
            with torch.no_grad():
                self._start_from_attention(ctx.projections, name, output_scale)

    def _start_from_attention(
        self, projections: AttentionProjections, name: str, output_scale: float
    ) -> None:
        """``x | B | C`` rows := value | key | query rows, ``out_proj`` := output (module doc)."""
        d_model = self.out_proj.out_features
        rows = torch.cat(teacher_weights(projections, d_model, name))
        self.in_proj.weight[d_model : 4 * d_model].copy_(rows)
        if self.in_proj.bias is not None:
            self.in_proj.bias[d_model : 4 * d_model].zero_()
        teacher = [projections.value, projections.key, projections.query]
        start_convolution_as_identity(self.conv1d, teacher, name)
        copy_output(self.out_proj, projections.output)
        self.norm.weight.fill_(output_scale)

    def _split(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``in_proj`` output -> gate ``z``, the convolution input ``x | B | C``, and ``dt``."""
        d_inner = self.out_proj.in_features
        heads = self.D.shape[0]
        return projected.split([d_inner, projected.shape[-1] - d_inner - heads, heads], dim=-1)

    def _heads(self, xbc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The convolved branch -> ``x [..., h, p]``, ``B, C [..., g, n]``."""
        d_inner = self.out_proj.in_features
        groups_width = self.ngroups * self.d_state
        x, B, C = xbc.split([d_inner, groups_width, groups_width], dim=-1)
        return (
            x.unflatten(-1, (-1, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _run(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None, with_state: bool
    ) -> tuple[torch.Tensor, Mamba2State | None]:
        """The block on ``[B, T, D]``; padded positions (left or right) never touch the state:
        their convolution input is zero and their time step too (:func:`.skip_padding`)."""
        gate, xbc, dt = self._split(self.in_proj(hidden_states))
        xbc = zero_padding(xbc, padding_mask)
        dt = skip_padding(dt, padding_mask)
        x, B, C = self._heads(self.conv1d(xbc))
        kernels = None if with_state else cuda_kernels(x)
        if kernels is not None:
            y, last = self._kernel_scan(kernels, x, dt, B, C), None
        else:
            y, last = self._scan(x, dt, B, C)
        output = self.out_proj(self.norm(y.to(x.dtype).flatten(-2), gate))
        if not with_state:
            return output, None
        return output, Mamba2State(self.conv1d.window_after(xbc), last.to(x.dtype))

    def _scan(
        self, x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor, C: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunked SSD scan in PyTorch, in at least float32 like the CUDA kernel, and the
        state after the last step."""
        x, dt, B, C, bias, A_log, D = at_least_float32(
            x, dt, B, C, self.dt_bias, self.A_log, self.D
        )
        delta = F.softplus(dt + bias)
        y, last = ssd_scan(x, delta, -torch.exp(A_log), B, C, self.chunk_size)
        return y + x * D.unsqueeze(-1), last

    def _kernel_scan(
        self, kernels: CudaKernels, x: Tensor, dt: Tensor, B: Tensor, C: Tensor
    ) -> Tensor:
        """mamba-ssm's fused SSD scan (``D`` skip and time-step softplus included)."""
        return kernels.chunk_scan(
            x,
            dt,
            -torch.exp(self.A_log.float()),
            B,
            C,
            self.chunk_size,
            D=self.D.float(),
            dt_bias=self.dt_bias.float(),
            dt_softplus=True,
        )

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Mamba2State:
        heads = self.D.shape[0]
        return Mamba2State(
            conv=self.conv1d.init_window(batch_size, device, dtype),
            ssm=torch.zeros(
                batch_size, heads, self.headdim, self.d_state, device=device, dtype=dtype
            ),
        )

    def step(
        self, hidden_state: torch.Tensor, state: Mamba2State
    ) -> tuple[torch.Tensor, Mamba2State]:
        """One token ``[B, D]`` through the block: the recurrence the SSD scan evaluates."""
        gate, xbc, dt = self._split(self.in_proj(hidden_state))
        xbc, window = self.conv1d.step(xbc, state.conv)
        x, B, C = self._heads(xbc)  # [B, h, p], [B, g, n], [B, g, n]
        per_head = self.D.shape[0] // self.ngroups
        B, C = B.repeat_interleave(per_head, dim=1), C.repeat_interleave(per_head, dim=1)
        dt = F.softplus(dt + self.dt_bias)  # [B, h]
        decay = torch.exp(dt * -torch.exp(self.A_log))[..., None, None]
        ssm = decay * state.ssm + (dt.unsqueeze(-1) * x).unsqueeze(-1) * B.unsqueeze(-2)
        y = (ssm @ C.unsqueeze(-1)).squeeze(-1) + x * self.D.unsqueeze(-1)
        out = self.out_proj(self.norm(y.flatten(-2), gate))
        return out, Mamba2State(conv=window, ssm=ssm)
