"""AdamW parameter groups: what is exempt from weight decay."""

from __future__ import annotations

from cald_framework.engine.optim import build_optimizer, no_decay_names
from cald_framework.testing.engine import TinyModel, training


def test_biases_norms_and_tagged_parameters_get_no_weight_decay() -> None:
    model = TinyModel(layers=1)
    exempt = no_decay_names(model)
    assert exempt == {
        "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.mix.bias",
        "blocks.0.mlp.0.bias", "blocks.0.mlp.2.bias", "head.bias", "gate",
    }
    optimizer = build_optimizer(model, training(weight_decay=0.05, lr=3e-4, betas=(0.8, 0.9)))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = optimizer.param_groups
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.05, 0.0)
    assert {names[id(p)] for p in plain["params"]} == exempt
    assert {names[id(p)] for p in decayed["params"]} == {
        "embed.weight", "blocks.0.mix.weight", "blocks.0.mlp.0.weight", "blocks.0.mlp.2.weight", "head.weight",
    }
    assert (decayed["lr"], decayed["betas"]) == (3e-4, (0.8, 0.9))


def test_frozen_parameters_are_left_out() -> None:
    model = TinyModel(layers=1)
    model.embed.requires_grad_(False)
    optimizer = build_optimizer(model, training())
    kept = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.embed.weight) not in kept
    assert len(kept) == sum(1 for p in model.parameters() if p.requires_grad)
