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
        kernels = cuda_kernels(states)
        if kernels is not None:
            mixed = kernels.causal_conv1d(
                states.transpose(1, 2), self.weight.squeeze(1), self.bias, activation="silu"
            )
            return mixed.transpose(1, 2)
        return F.silu(self._shifted_sum(states))

    def _shifted_sum(self, states: torch.Tensor) -> torch.Tensor:
        """The convolution as ``K`` shifted multiply-adds: on CPU, autograd through these is
        an order of magnitude faster than the backward of a depthwise ``F.conv1d``."""
        taps = self.kernel_size[0]
        time = states.shape[1]
        padded = F.pad(states, (0, 0, taps - 1, 0))
        weight = self.weight.squeeze(1)  # [C, K]
        mixed = padded[:, :time] * weight[:, 0]
        for tap in range(1, taps):
            mixed = torch.addcmul(mixed, padded[:, tap : tap + time], weight[:, tap])
        return mixed if self.bias is None else mixed + self.bias

    def init_window(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """The last ``K`` inputs of an empty history: ``[B, C, K]`` zeros."""
        return torch.zeros(
            batch_size, self.in_channels, self.kernel_size[0], device=device, dtype=dtype
        )

    def window_after(self, states: torch.Tensor) -> torch.Tensor:
        """The window :meth:`step` holds after reading ``states [B, T, C]`` from an empty one."""
        taps = self.kernel_size[0]
        padded = F.pad(states, (0, 0, max(taps - states.shape[1], 0), 0))
        return padded[:, -taps:].transpose(1, 2).contiguous()

    def step(self, state: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``state [B, C]`` enters the window; returns the output and new window."""
        window = torch.cat([window[:, :, 1:], state.unsqueeze(-1)], dim=-1)
        mixed = (window * self.weight.squeeze(1)).sum(-1)
        if self.bias is not None:
            mixed = mixed + self.bias
        return F.silu(mixed), window
