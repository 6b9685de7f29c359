"""The linear recurrence ``h_t = a_t * h_(t-1) + u_t`` (``h_(-1) = 0``) as a parallel scan.

Mamba-1 gives every (channel, state) pair its own decay, so the recurrence cannot be folded
into matrix products the way Mamba2's scalar decays can. It is evaluated by recursive doubling
instead: pairs of neighbouring steps are merged into one step of half the length, the half
is solved, and the other half is filled in. That takes ``log2(T)`` vectorised rounds and a
small constant factor more arithmetic than a sequential loop, and it only ever multiplies by
decays in ``(0, 1]``, so nothing can overflow.

Autograd through the rounds would keep every intermediate and, for slices, allocate full-size
gradients; the backward pass is itself a linear recurrence run in reverse, so a custom
autograd function solves it with the same scan and keeps only ``a`` and ``h``.
"""

from __future__ import annotations

from typing import Any

import torch


def _solve(decay: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The states of the recurrence along dim 1, without autograd."""
    time = decay.shape[1]
    states = torch.empty_like(inputs)
    states[:, 0] = inputs[:, 0]
    if time == 1:
        return states
    even = time - time % 2
    decay_even, decay_odd = decay[:, 0:even:2], decay[:, 1:even:2]
    inputs_even, inputs_odd = inputs[:, 0:even:2], inputs[:, 1:even:2]
    # steps 2k and 2k+1 merged: h_(2k+1) = (a_(2k+1) a_2k) h_(2k-1) + (a_(2k+1) u_2k + u_(2k+1))
    states[:, 1:even:2] = _solve(
        decay_odd * decay_even, torch.addcmul(inputs_odd, decay_odd, inputs_even)
    )
    states[:, 2:even:2] = torch.addcmul(
        inputs_even[:, 1:], decay_even[:, 1:], states[:, 1 : even - 1 : 2]
    )
    if even < time:
        states[:, -1] = torch.addcmul(inputs[:, -1], decay[:, -1], states[:, -2])
    return states


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, decay: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        states = _solve(decay, inputs)
        ctx.save_for_backward(decay, states)
        return states

    @staticmethod
    def backward(ctx: Any, grad_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decay, states = ctx.saved_tensors
        # dL/du_t = g_t + a_(t+1) dL/du_(t+1): the same recurrence, backwards in time
        next_decay = torch.zeros_like(decay)
        next_decay[:, :-1] = decay[:, 1:]
        grad_inputs = _solve(next_decay.flip(1), grad_states.flip(1)).flip(1)
        grad_decay = torch.zeros_like(decay)
        grad_decay[:, 1:] = grad_inputs[:, 1:] * states[:, :-1]
        return grad_decay, grad_inputs


def linear_scan(decay: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """All states ``h_t = decay_t * h_(t-1) + inputs_t`` along dim 1, from ``h_(-1) = 0``.

    ``decay`` and ``inputs`` have the same shape ``[B, T, ...]``; differentiable in both.
    """
    return _LinearScan.apply(decay, inputs)
