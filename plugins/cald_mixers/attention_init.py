"""Shared pieces of ``init = "attention"`` for the Mamba-family mixers.

A converted layer starts as a gated linear attention built from the teacher's projections:
values feed the scanned input ``x``, keys the input matrix ``B``, queries the output matrix
``C``, and the teacher's output projection becomes ``out_proj``. Everything else (gate, time
steps, decay rates, ``D``, norm) keeps the mixer's usual initialisation, drawn exactly as under
``init = "random"``; the mapped tensors are then overwritten, so the two inits consume the same
random numbers.

The depthwise convolution starts as an identity tap (last tap 1, the others 0) whose bias holds
the teacher's projection biases, so ``x, B, C = silu(V h + b_v), silu(K h + b_k), silu(Q h +
b_q)``: the positive feature map of a linear attention. MambaInLlama leaves the convolution at
its random init, which mixes each of those features with its three predecessors through random
weights and so blurs the query/key match the mapping sets up; training can still learn the
local mixing from the identity start.

How close a layer starts (``tests/test_mixer_attention_init.py``, tiny random teachers, the same
shapes both ways): the per-layer relative error of the mixer output against the attention
output is about 29 for Mamba2 on Llama against 220 at random init (the gated RMSNorm fixes the
output scale, which small teacher values do not share), and about 1.03 for Mamba-1 on GPT-NeoX
against 15 (its unnormalised scores are small, so it starts near zero output).
"""

from __future__ import annotations

import torch
from torch import nn

from cald_framework.contracts import AttentionProjections, MixerContext
from cald_framework.errors import SpecError

from .ssm_options import SsmOptions


def attention_head_dim(ctx: MixerContext, mixer: str) -> int:
    """``d_model / num_heads``, the per-head width every attention-derived geometry uses."""
    if ctx.d_model % ctx.num_heads:
        raise SpecError(
            f"{mixer}: init = 'attention' needs num_heads {ctx.num_heads} to divide "
            f"d_model {ctx.d_model}"
        )
    return ctx.d_model // ctx.num_heads


def geometry(options: SsmOptions, name: str, derived: int, why: str, mixer: str) -> int:
    """The value of geometry option ``name``: as set, or ``derived`` under attention init.

    Random init fills unset options at validation, so only attention init reaches ``derived``;
    there an explicit value that differs from it contradicts the mapping and is refused.
    """
    value = getattr(options, name)
    if options.init == "random":
        return value
    if value is not None and value != derived:
        raise SpecError(
            f"{mixer}: init = 'attention' needs {name} = {derived} ({why}), got {value}"
        )
    return derived


def teacher_weights(
    projections: AttentionProjections, d_model: int, mixer: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The value, key and query weights ``[d_model, d_model]`` (grouped K/V arrive expanded)."""
    weights = []
    for role in ("value", "key", "query"):
        linear = getattr(projections, role)
        if (linear.in_features, linear.out_features) != (d_model, d_model):
            raise SpecError(
                f"{mixer}: the {role} projection maps {linear.in_features} -> "
                f"{linear.out_features} features, expected {d_model} -> {d_model}"
            )
        weights.append(linear.weight)
    value, key, query = weights
    return value, key, query


def start_convolution_as_identity(
    conv: nn.Conv1d, linears: list[nn.Linear], mixer: str
) -> None:
    """Identity tap, with the biases of ``linears`` (in channel order) as the conv's bias."""
    biases = [linear.bias for linear in linears]
    has_biases = any(bias is not None for bias in biases)
    if has_biases and conv.bias is None:
        raise SpecError(
            f"{mixer}: init = 'attention' needs conv_bias = true to carry the attention's "
            "projection biases"
        )
    weight = torch.zeros_like(conv.weight)
    weight[..., -1] = 1.0
    conv.weight.copy_(weight)
    if conv.bias is not None:
        conv.bias.copy_(
            torch.cat(
                [
                    torch.zeros(linear.out_features) if bias is None else bias.detach().cpu()
                    for linear, bias in zip(linears, biases, strict=True)
                ]
            )
        )


def copy_output(out_proj: nn.Linear, output: nn.Linear | None) -> None:
    """``out_proj`` := the teacher's output projection, or the identity where the layer keeps it.

    Without an output projection in the replaced module (BERT keeps its output dense in the
    layer, after the slot), the identity hands the layer's own dense the mixed values, as the
    attention did.
    """
    if output is None:
        out_proj.weight.copy_(torch.eye(*out_proj.weight.shape))
    else:
        out_proj.weight.copy_(output.weight)
    if out_proj.bias is not None:
        source = None if output is None else output.bias
        out_proj.bias.copy_(torch.zeros_like(out_proj.bias) if source is None else source)
