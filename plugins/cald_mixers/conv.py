"""The causal depthwise convolution (followed by SiLU) at the front of every Mamba block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import cuda_kernels


class CausalConvSiLU(nn.Conv1d):
    """Depthwise causal convolution over time, then SiLU, on ``[B, T, C]`` (channels last).

    Subclassing ``nn.Conv1d`` keeps Mamba's parameter layout (``weight [C, 1, K]``) and its
    default initialisation; only the call convention differs.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool):
        super().__init__(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        channels_first = states.transpose(1, 2)
        kernels = cuda_kernels(states)
        if kernels is not None:
            mixed = kernels.causal_conv1d(
                channels_first, self.weight.squeeze(1), self.bias, activation="silu"
            )
            return mixed.transpose(1, 2)
        padded = F.pad(channels_first, (self.kernel_size[0] - 1, 0))
        mixed = F.conv1d(padded, self.weight, self.bias, groups=self.groups)
        return F.silu(mixed).transpose(1, 2)

    def init_window(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """The last ``K`` inputs of an empty history: ``[B, C, K]`` zeros."""
        return torch.zeros(
            batch_size, self.in_channels, self.kernel_size[0], device=device, dtype=dtype
        )

    def step(self, state: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``state [B, C]`` enters the window; returns the output and new window."""
        window = torch.cat([window[:, :, 1:], state.unsqueeze(-1)], dim=-1)
        mixed = (window * self.weight.squeeze(1)).sum(-1)
        if self.bias is not None:
            mixed = mixed + self.bias
        return F.silu(mixed), window
