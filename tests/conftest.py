"""Shared fixtures: tiny models of every built-in source family, test mixers, toy registries."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from cald_testing.models import TINY_MODELS
from torch import nn

from cald_framework.contracts import (
    MixerContext,
    MixerPlugin,
    NoOptions,
    PluginOptions,
    SourcePlugin,
)
from cald_framework.spec import loader
from cald_framework.testing.toy_plugins import TOY_DATA, toy_registries


@pytest.fixture(scope="session")
def source_plugins() -> dict[str, SourcePlugin]:
    """The built-in source plugins, collected straight from their registration hook."""
    from cald_sources.plugin import cald_register_source_models

    found: list[SourcePlugin] = []
    cald_register_source_models(register=found.append)
    return {plugin.name: plugin for plugin in found}


@pytest.fixture
def make_teacher(source_plugins: dict[str, SourcePlugin]) -> Callable[..., Any]:
    """``make_teacher(case)``: a float64 teacher in eval mode, seeded."""
    from cald_framework.modeling import CaldModel

    def make(case: str, seed: int = 0) -> CaldModel:
        source, config, head = TINY_MODELS[case]
        torch.manual_seed(seed)
        model = CaldModel.from_source_config(
            source, config, head, max_length=40, source=source_plugins[source]
        )
        return model.double().eval()

    return make


@pytest.fixture
def make_inputs() -> Callable[..., dict[str, torch.Tensor]]:
    """``make_inputs(case)``: a right-padded batch of two for the case's modality."""

    def make(case: str, seed: int = 1) -> dict[str, torch.Tensor]:
        source, config, _ = TINY_MODELS[case]
        generator = torch.Generator().manual_seed(seed)
        if source == "wav2vec2":
            values = torch.randn(2, 400, generator=generator, dtype=torch.float64)
            mask = torch.ones(2, 400, dtype=torch.long)
            mask[1, 230:] = 0
            return {"input_values": values * mask, "attention_mask": mask}
        ids = torch.randint(3, config["vocab_size"], (2, 9), generator=generator)
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, 6:] = 0
        return {"input_ids": ids, "attention_mask": mask}

    return make


@pytest.fixture
def bert(make_teacher: Callable[..., Any]) -> Any:
    """The tiny BERT teacher."""
    return make_teacher("bert")


@pytest.fixture
def batches(make_inputs: Callable[..., dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Two differently seeded text batches for the tiny BERT."""
    return [make_inputs("bert", seed=1), make_inputs("bert", seed=2)]


@pytest.fixture
def toy_spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of a spec validated against the toy registries (see
    :data:`~cald_framework.testing.toy_plugins.TOY_SPEC`), holding its data file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader, "load_registries", toy_registries)
    (tmp_path / "data.csv").write_text(TOY_DATA)
    return tmp_path


class _ExactAttention(nn.Module):
    """Softmax attention from the teacher's own projections: a student that equals its teacher.

    Built bare (no projections) it has the same parameters, for reloading saved weights.
    """

    def __init__(self, options: PluginOptions, ctx: MixerContext):
        super().__init__()
        width, given = ctx.d_model, ctx.projections
        self.heads, self.causal = ctx.num_heads, ctx.causal
        self.query = given.query if given else nn.Linear(width, width)
        self.key = given.key if given else nn.Linear(width, width)
        self.value = given.value if given else nn.Linear(width, width)
        self.output = None
        if ctx.output_projection:
            self.output = given.output if given else nn.Linear(width, width)

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        batch, time, width = states.shape
        query, key, value = (
            projection(states).view(batch, time, self.heads, -1).transpose(1, 2)
            for projection in (self.query, self.key, self.value)
        )
        scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        allowed = torch.ones(time, time, dtype=torch.bool, device=states.device)
        if self.causal:
            allowed = allowed.tril()
        if padding_mask is not None:
            allowed = allowed & padding_mask[:, None, None, :]
        mixed = scores.masked_fill(~allowed, -math.inf).softmax(-1) @ value
        mixed = mixed.transpose(1, 2).reshape(batch, time, width)
        return mixed if self.output is None else self.output(mixed)


class _CumulativeMean(nn.Module):
    """A causal mixer: a projection of the running mean, times a scale shared by all layers.

    It remembers the padding masks and shapes it was called with.
    """

    def __init__(self, options: PluginOptions, ctx: MixerContext):
        super().__init__()
        self.projection = nn.Linear(ctx.d_model, ctx.d_model)
        if "scale" not in ctx.shared:
            ctx.shared["scale"] = nn.Linear(1, ctx.d_model, bias=False)
        self.scale = ctx.shared["scale"]
        self.calls: list[tuple[tuple[int, ...], torch.Tensor | None]] = []

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((tuple(states.shape), padding_mask))
        steps = torch.arange(1, states.shape[1] + 1, dtype=states.dtype, device=states.device)
        running = states.cumsum(1) / steps[:, None]
        return self.projection(running) * self.scale.weight[:, 0]


class _LowRankAttention(_ExactAttention):
    """Linformer-like: keys and values projected along the sequence by one ``E`` shared by all
    layers (``max_length x 4``), padded rows zeroed first."""

    def __init__(self, options: PluginOptions, ctx: MixerContext):
        super().__init__(options, ctx)
        if "E" not in ctx.shared:
            ctx.shared["E"] = nn.Linear(ctx.max_length, 4, bias=False)
        self.sequence = ctx.shared["E"]

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        batch, time, width = states.shape
        if padding_mask is not None:
            states = states * padding_mask[..., None]
        query = self.query(states).view(batch, time, self.heads, -1).transpose(1, 2)
        rows = self.sequence.weight[:, :time]
        key, value = (
            (rows @ projection(states)).view(batch, rows.shape[0], self.heads, -1).transpose(1, 2)
            for projection in (self.key, self.value)
        )
        scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        mixed = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, time, width)
        return mixed if self.output is None else self.output(mixed)


@pytest.fixture(scope="session")
def mixer_plugins() -> dict[str, MixerPlugin]:
    """Test mixers by name; ``bidirectional-mean`` is the causal mean declared bidirectional."""
    plugins = [
        MixerPlugin("exact-attention", NoOptions, _ExactAttention, "causal"),
        MixerPlugin("cumulative-mean", NoOptions, _CumulativeMean, "causal"),
        MixerPlugin("bidirectional-mean", NoOptions, _CumulativeMean, "bidirectional"),
        MixerPlugin("low-rank", NoOptions, _LowRankAttention, "bidirectional"),
    ]
    return {plugin.name: plugin for plugin in plugins}
