"""Mamba2's state-space duality (SSD) scan in PyTorch: quadratic work inside chunks, and one
state per chunk passed between them.

With one scalar decay per head, the recurrence ``h_t = exp(Δ_t A) h_(t-1) + Δ_t x_t B_tᵀ``,
``y_t = h_t C_t`` is, inside a chunk, a masked product ``((C Bᵀ) ∘ decay) (Δ x)``: matrix
multiplications. Across chunks only the end-of-chunk states travel. Every decay is ``exp`` of
a segment sum of log-decays, which is never positive (the upper triangle is set to ``-inf``
before ``exp``), so nothing can overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decay_between(log_decay: torch.Tensor) -> torch.Tensor:
    """``[..., L, L]``: entry ``(i, j)`` is ``exp(sum_(j<k<=i) a_k)`` for ``j <= i``, else 0.

    That is the decay a state picks up from step ``j`` to step ``i``. The segment sums are
    differences of cumulative sums taken in float64, so they keep the precision of the input
    however long the cumulative sums grow, at the cost of a single pass.
    """
    length = log_decay.shape[-1]
    cumulative = log_decay.to(torch.float64).cumsum(-1)
    sums = (cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)).to(log_decay.dtype)
    causal = torch.ones(length, length, dtype=torch.bool, device=log_decay.device).tril()
    return sums.masked_fill(~causal, -torch.inf).exp()


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` of the SSD recurrence from a zero state (the ``D`` skip is left to the caller), and
    the state after the last step (generation's prefill): each chunk's own end state decayed
    over the chunks after it.

    ``x [b, t, h, p]``, ``dt [b, t, h]`` (non-negative), ``A [h]`` (negative),
    ``B, C [b, t, g, n]`` with ``g`` groups of ``h / g`` heads each. Returns ``y [b, t, h, p]``
    and the state ``[b, h, p, n]``.
    """
    batch, time, heads, head_dim = x.shape
    groups = B.shape[2]
    # steps with Δ = 0 (no decay, no input) at the end make the length a multiple of the chunk
    pad = -time % chunk_size
    chunks = (time + pad) // chunk_size

    def by_chunk(t: torch.Tensor) -> torch.Tensor:
        """``[b, t, k, ...]`` -> ``[b, chunks, k, L, ...]``: heads (or groups) before positions."""
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.view(batch, chunks, chunk_size, *t.shape[2:]).transpose(2, 3)

    def per_group(t: torch.Tensor) -> torch.Tensor:
        """``[b, c, h, ...]`` -> ``[b, c, g, h/g, ...]``, to broadcast against group tensors."""
        return t.view(batch, chunks, groups, heads // groups, *t.shape[3:])

    inputs = by_chunk(x * dt.unsqueeze(-1))  # [b, c, h, L, p]
    log_decay = by_chunk(dt * A)  # [b, c, h, L]
    B, C = by_chunk(B).unsqueeze(3), by_chunk(C).unsqueeze(3)  # [b, c, g, 1, L, n]
    decay = per_group(decay_between(log_decay))  # [b, c, g, h/g, L, L]

    # inside each chunk: y_i = sum_(j<=i) (C_i . B_j) decay(j -> i) Δ_j x_j
    within = (decay * (C @ B.transpose(-1, -2))) @ per_group(inputs)

    # each chunk's own end state, then the state entering each chunk from those before it
    to_end = decay[..., -1, :].unsqueeze(-1)  # [b, c, g, h/g, L, 1]
    own = ((per_group(inputs) * to_end).transpose(-1, -2) @ B).flatten(2, 3)  # [b, c, h, p, n]
    across = decay_between(F.pad(log_decay.sum(-1).transpose(1, 2), (1, 0)))[..., :-1, 1:]
    entering = (across @ own.transpose(1, 2).flatten(-2)).view(batch, heads, chunks, head_dim, -1)
    from_start = per_group(log_decay.cumsum(-1).exp()).unsqueeze(-1)  # [b, c, g, h/g, L, 1]
    carried = from_start * (C @ per_group(entering.transpose(1, 2)).transpose(-1, -2))

    y = (within + carried).view(batch, chunks, heads, chunk_size, head_dim).transpose(2, 3)
    chunk_log_decay = log_decay.sum(-1)  # [b, c, h]
    after = chunk_log_decay.flip(1).cumsum(1).flip(1) - chunk_log_decay
    final = (after.exp()[..., None, None] * own).sum(1)
    return y.reshape(batch, chunks * chunk_size, heads, head_dim)[:, :time], final
