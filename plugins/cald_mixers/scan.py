"""Mamba-1's selective scan in PyTorch: ``h_t = exp(Δ_t A) h_(t-1) + Δ_t x_t B_t``, ``y = C h``.

Every (channel, state) pair has its own decay, so unlike Mamba2 the recurrence does not fold
into matrix products. The linear recurrence is evaluated by recursive doubling: neighbouring
steps are merged pairwise into a problem of half the length, which is solved, and the other
half is filled in, so there are ``log2(T)`` vectorised rounds and no loop over time. Only
decays in ``(0, 1]`` are ever multiplied, so nothing can overflow.

The states ``[batch, time, channels, d_state]`` are the large tensor here. Like the CUDA
kernel, the scan never keeps them: it works on blocks of batch rows and channels small enough
to stay in cache, returns only ``y``, and recomputes a block's states in the backward pass,
whose core is the same recurrence run backwards in time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

#: elements of one ``[rows, time, channels, d_state]`` block: the few such tensors alive at once
#: fit in a server's L3 cache, and the blocks are large enough that per-operation overhead
#: (Python, thread synchronisation) stays small next to the arithmetic
BLOCK_ELEMENTS = 1 << 20


def discretise(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order-hold decay ``exp(Δ A)`` and Euler input ``Δ x B``: ``[..., channels, d_state]``.

    ``x, delta [..., channels]``, ``A [channels, d_state]``, ``B [..., d_state]``. Shared by the
    scan and the recurrent step, so both discretise identically.
    """
    decay = torch.exp(delta.unsqueeze(-1) * A)
    inputs = (delta * x).unsqueeze(-1) * B.unsqueeze(-2)
    return decay, inputs


def read_out(states: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``C · h`` for every channel: ``[..., channels, d_state]`` x ``[..., d_state]``."""
    return (states * C.unsqueeze(-2)).sum(-1)


def _solve(
    decay: torch.Tensor, inputs: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """All states of ``h_t = decay_t * h_(t-1) + inputs_t`` along dim 1, from ``h_(-1) = 0``.

    Written into ``out`` (a tensor or strided view shaped like ``inputs``) when given.
    """
    time = decay.shape[1]
    states = torch.empty_like(inputs) if out is None else out
    states[:, 0] = inputs[:, 0]
    if time == 1:
        return states
    even = time - time % 2
    decay_even, decay_odd = decay[:, 0:even:2], decay[:, 1:even:2]
    inputs_even, inputs_odd = inputs[:, 0:even:2], inputs[:, 1:even:2]
    # steps 2k and 2k+1 merged: h_(2k+1) = (a_(2k+1) a_2k) h_(2k-1) + (a_(2k+1) u_2k + u_(2k+1))
    _solve(
        decay_odd * decay_even,
        torch.addcmul(inputs_odd, decay_odd, inputs_even),
        out=states[:, 1:even:2],
    )
    torch.addcmul(
        inputs_even[:, 1:], decay_even[:, 1:], states[:, 1 : even - 1 : 2], out=states[:, 2:even:2]
    )
    if even < time:
        torch.addcmul(inputs[:, -1], decay[:, -1], states[:, -2], out=states[:, -1])
    return states


def _solve_backwards(decay: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """All ``g_t = inputs_t + decay_(t+1) * g_(t+1)``, from the end: the adjoint recurrence."""
    following = torch.cat([decay[:, 1:], torch.zeros_like(decay[:, :1])], dim=1)
    return _solve(following.flip(1), inputs.flip(1)).flip(1)


def _blocks(batch: int, channels: int, size: int, budget: int) -> list[tuple[slice, slice]]:
    """(rows, channels) slices covering the batch; ``size`` elements per row and channel."""
    rows = batch if batch * size <= budget else max(1, budget // size)
    width = max(1, min(channels, budget // (rows * size)))
    return [
        (slice(row, row + rows), slice(channel, channel + width))
        for row in range(0, batch, rows)
        for channel in range(0, channels, width)
    ]


def _scan_blocks(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    budget: int,
    last: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y`` of the scan, block by block; the state after the last step goes into ``last``."""
    y = torch.empty_like(x)
    batch, time, channels = x.shape
    for rows, cols in _blocks(batch, channels, time * A.shape[1], budget):
        decay, inputs = discretise(x[rows, :, cols], delta[rows, :, cols], A[cols], B[rows])
        states = _solve(decay, inputs)
        y[rows, :, cols] = read_out(states, C[rows])
        if last is not None:
            last[rows, cols] = states[:, -1]
    return y


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        budget: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, delta, A, B, C)
        ctx.budget = budget
        return _scan_blocks(x, delta, A, B, C, budget)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, delta, A, B, C = ctx.saved_tensors
        grad_x, grad_delta = torch.empty_like(x), torch.empty_like(delta)
        grad_A, grad_B, grad_C = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        batch, time, channels = x.shape
        for rows, cols in _blocks(batch, channels, time * A.shape[1], ctx.budget):
            x_block, delta_block, grad_block = (
                x[rows, :, cols],
                delta[rows, :, cols],
                grad_y[rows, :, cols],
            )
            decay, inputs = discretise(x_block, delta_block, A[cols], B[rows])
            states = _solve(decay, inputs)
            # y_t = C_t · h_t, so dL/dh_t = grad_y_t C_t; dL/du_t follows the adjoint recurrence
            grad_inputs = _solve_backwards(decay, grad_block.unsqueeze(-1) * C[rows].unsqueeze(-2))
            # decay_t multiplies h_(t-1); d decay / d(ΔA) = decay
            grad_log_decay = torch.zeros_like(decay)
            torch.mul(grad_inputs[:, 1:], states[:, :-1], out=grad_log_decay[:, 1:])
            grad_log_decay *= decay
            # inputs = (Δ x) B
            grad_scaled_x = read_out(grad_inputs, B[rows])
            grad_x[rows, :, cols] = grad_scaled_x * delta_block
            grad_delta[rows, :, cols] = grad_scaled_x * x_block + (grad_log_decay * A[cols]).sum(-1)
            grad_A[cols] += (grad_log_decay * delta_block.unsqueeze(-1)).sum((0, 1))
            grad_B[rows] += (grad_inputs * (delta_block * x_block).unsqueeze(-1)).sum(-2)
            grad_C[rows] += (states * grad_block.unsqueeze(-1)).sum(-2)
        return grad_x, grad_delta, grad_A, grad_B, grad_C, None


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    budget: int = BLOCK_ELEMENTS,
) -> torch.Tensor:
    """``y [b, t, c]`` of the selective scan from a zero state (no ``D`` skip, no gate).

    ``x, delta [b, t, c]`` (``delta`` positive), ``A [c, n]`` (negative), ``B, C [b, t, n]``;
    differentiable in all five. ``budget`` bounds the elements of one block.
    """
    return _SelectiveScan.apply(x, delta, A, B, C, budget)


@torch.no_grad()
def selective_scan_with_state(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    budget: int = BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`selective_scan` and the state after the last step ``[b, c, n]``, for prefilling
    a generation state; not differentiable."""
    last = x.new_empty(x.shape[0], x.shape[2], A.shape[1])
    return _scan_blocks(x, delta, A, B, C, budget, last), last
