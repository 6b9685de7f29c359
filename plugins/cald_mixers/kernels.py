"""The fused CUDA kernels of mamba-ssm and causal-conv1d, used when installed (the ``cuda`` extra).

They are imported lazily and only for CUDA inputs, so CPU-only installs never touch them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import torch


@dataclass(frozen=True)
class CudaKernels:
    #: ``causal_conv1d_fn(x [B, C, T], weight [C, K], bias, activation="silu")``
    causal_conv1d: Callable[..., torch.Tensor]
    #: ``selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)`` of Mamba-1
    selective_scan: Callable[..., Any]
    #: ``mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus)`` (SSD)
    chunk_scan: Callable[..., Any]


def cuda_kernels(states: torch.Tensor) -> CudaKernels | None:
    """The kernels when ``states`` lives on a CUDA device and they are installed, else ``None``."""
    if not (states.is_cuda and torch.cuda.is_available()):
        return None
    return _load()


@functools.cache
def _load() -> CudaKernels | None:
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError:
        return None
    return CudaKernels(causal_conv1d_fn, selective_scan_fn, mamba_chunk_scan_combined)
