"""Helpers for testing mixers: contexts, padded batches, and naive step-by-step references.

The references are written from the papers' equations, one time step at a time, so the
parallel implementations are checked against something that shares none of their code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cald_framework.contracts import AttentionProjections, MixerContext
from cald_mixers.mamba import MambaMixer, MambaOptions
from cald_mixers.mamba2 import Mamba2Mixer, Mamba2Options


def context(
    d_model: int = 8,
    num_heads: int = 2,
    *,
    max_length: int = 16,
    layer_index: int = 0,
    num_layers: int = 1,
    causal: bool = False,
    shared: nn.ModuleDict | None = None,
    projections: AttentionProjections | None = None,
    output_projection: bool = True,
) -> MixerContext:
    return MixerContext(
        d_model=d_model,
        num_heads=num_heads,
        layer_index=layer_index,
        num_layers=num_layers,
        max_length=max_length,
        causal=causal,
        shared=nn.ModuleDict() if shared is None else shared,
        projections=projections,
        output_projection=output_projection,
    )


def small_mamba(seed: int = 0, **options: object) -> MambaMixer:
    """A float64 Mamba of width 8, small enough for step-by-step references."""
    torch.manual_seed(seed)
    merged = {"d_state": 4, "expand": 2, "d_conv": 3, **options}
    return MambaMixer(MambaOptions(**merged), context(8, 2, causal=True)).double()


def small_mamba2(seed: int = 0, **options: object) -> Mamba2Mixer:
    """A float64 Mamba2 of width 8: 4 heads of 4 channels in 2 groups, chunks of 4."""
    torch.manual_seed(seed)
    merged = {"d_state": 4, "headdim": 4, "ngroups": 2, "chunk_size": 4, "d_conv": 3, **options}
    return Mamba2Mixer(Mamba2Options(**merged), context(8, 2, causal=True)).double()


def padded_batch(
    lengths: list[int], width: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 batch ``[B, max(lengths), width]`` with garbage in the padding, and its mask."""
    generator = torch.Generator().manual_seed(seed)
    time = max(lengths)
    states = torch.randn(len(lengths), time, width, generator=generator, dtype=torch.float64)
    mask = torch.arange(time)[None, :] < torch.tensor(lengths)[:, None]
    states = torch.where(mask[..., None], states, 1e3 * torch.randn_like(states))
    return states, mask


def assert_padding_is_invisible(
    mixer: nn.Module, states: torch.Tensor, mask: torch.Tensor, atol: float = 1e-10
) -> None:
    """The valid outputs of a padded batch equal those of each sequence run alone."""
    batched = mixer(states, mask)
    assert batched.shape == states.shape
    for row, length in enumerate(mask.sum(1).tolist()):
        alone = mixer(states[row : row + 1, :length], None)
        torch.testing.assert_close(batched[row, :length], alone[0], rtol=0, atol=atol)


def assert_causal(mixer: nn.Module, states: torch.Tensor, cut: int) -> None:
    """Changing the inputs from position ``cut`` on leaves the outputs before it unchanged."""
    changed = states.clone()
    changed[:, cut:] = torch.randn_like(changed[:, cut:]) * 10
    torch.testing.assert_close(mixer(changed, None)[:, :cut], mixer(states, None)[:, :cut])


def assert_steps_match_forward(mixer: nn.Module, states: torch.Tensor) -> None:
    """Running ``step`` token by token from ``init_state`` reproduces the parallel forward."""
    batch, time, _ = states.shape
    state = mixer.init_state(batch, states.device, states.dtype)
    outputs = []
    for position in range(time):
        output, state = mixer.step(states[:, position], state)
        outputs.append(output)
    torch.testing.assert_close(torch.stack(outputs, 1), mixer(states, None), rtol=0, atol=1e-10)


def assert_matches_reference(
    mixer: nn.Module,
    reference: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    lengths: list[int],
) -> None:
    """Each sequence's valid outputs in a padded batch equal ``reference`` run on it alone."""
    hidden, mask = padded_batch(lengths, mixer.in_proj.in_features)
    out = mixer(hidden, mask)
    for row, length in enumerate(lengths):
        expected = reference(mixer, hidden[row : row + 1, :length])[0]
        torch.testing.assert_close(out[row, :length], expected, atol=1e-6, rtol=0)


def assert_float32_is_finite_and_close(mixer: nn.Module, time: int = 40) -> None:
    """The float32 forward of a float64 ``mixer`` stays finite and close to the float64 one."""
    hidden, _ = padded_batch([time], mixer.in_proj.in_features)
    exact = mixer(hidden, None)
    single = mixer.float()(hidden.float(), None)
    assert torch.isfinite(single).all()
    torch.testing.assert_close(single.double(), exact, atol=1e-4, rtol=1e-4)


def softmax_attention(
    hidden: torch.Tensor, projections: AttentionProjections, num_heads: int
) -> torch.Tensor:
    """Standard multi-head attention with scores scaled by ``1/sqrt(head_dim)``."""
    batch, time, width = hidden.shape
    head_dim = width // num_heads

    def heads(linear: nn.Linear) -> torch.Tensor:
        return linear(hidden).view(batch, time, num_heads, head_dim).transpose(1, 2)

    query, key, value = heads(projections.query), heads(projections.key), heads(projections.value)
    weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    mixed = (weights @ value).transpose(1, 2).reshape(batch, time, width)
    return mixed if projections.output is None else projections.output(mixed)


def causal_conv_silu(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The depthwise causal convolution through ``F.conv1d`` (padded both sides, cut), then SiLU."""
    taps, time = conv.weight.shape[-1], x.shape[1]
    mixed = F.conv1d(
        x.transpose(1, 2), conv.weight, conv.bias, padding=taps - 1, groups=x.shape[-1]
    )
    return F.silu(mixed[..., :time].transpose(1, 2))


def mamba_reference(mixer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Mamba-1 (Gu & Dao 2023, Algorithm 2) with a Python loop over time, from its parameters."""
    d_state, dt_rank = mixer.d_state, mixer.dt_rank
    x, gate = mixer.in_proj(hidden).chunk(2, dim=-1)
    x = causal_conv_silu(mixer.conv1d, x)
    dt, B, C = mixer.x_proj(x).split([dt_rank, d_state, d_state], dim=-1)
    delta = F.softplus(mixer.dt_proj(dt))
    A = -torch.exp(mixer.A_log)
    state = torch.zeros(hidden.shape[0], x.shape[-1], d_state, dtype=hidden.dtype)
    outputs = []
    for t in range(hidden.shape[1]):
        state = torch.exp(delta[:, t, :, None] * A) * state
        state = state + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        outputs.append((state * C[:, t, None, :]).sum(-1) + mixer.D * x[:, t])
    y = torch.stack(outputs, dim=1) * F.silu(gate)
    return mixer.out_proj(y)


def mamba2_reference(mixer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Mamba2 (Dao & Gu 2024) with a Python loop over time and over heads, from its parameters."""
    heads, headdim, groups, d_state = (
        mixer.D.shape[0],
        mixer.headdim,
        mixer.ngroups,
        mixer.d_state,
    )
    d_inner = heads * headdim
    z, xbc, dt = mixer.in_proj(hidden).split(
        [d_inner, d_inner + 2 * groups * d_state, heads], dim=-1
    )
    xbc = causal_conv_silu(mixer.conv1d, xbc)
    x = xbc[..., :d_inner]
    B = xbc[..., d_inner : d_inner + groups * d_state]
    C = xbc[..., d_inner + groups * d_state :]
    dt = F.softplus(dt + mixer.dt_bias)
    A = -torch.exp(mixer.A_log)
    batch, time, _ = hidden.shape
    y = torch.zeros(batch, time, d_inner, dtype=hidden.dtype)
    for head in range(heads):
        group = head // (heads // groups)
        channels = slice(head * headdim, (head + 1) * headdim)
        states = slice(group * d_state, (group + 1) * d_state)
        state = torch.zeros(batch, headdim, d_state, dtype=hidden.dtype)
        for t in range(time):
            step = dt[:, t, head, None, None]
            state = torch.exp(step * A[head]) * state
            state = state + step * x[:, t, channels, None] * B[:, t, None, states]
            readout = (state * C[:, t, None, states]).sum(-1)
            y[:, t, channels] = readout + mixer.D[head] * x[:, t, channels]
    gated = (y * F.silu(z)).view(batch, time, groups, -1)
    normed = gated / torch.sqrt(gated.pow(2).mean(-1, keepdim=True) + mixer.norm.eps)
    return mixer.out_proj(normed.view(batch, time, d_inner) * mixer.norm.weight)
