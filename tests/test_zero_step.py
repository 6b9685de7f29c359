"""The engine's rules on a DeepSpeed engine: no second division by the accumulation, the
boundary on the last micro-batch, a non-finite loss reaching DeepSpeed's overflow skip, and
the optimizer groups the LR schedule sees. A recording stand-in plays DeepSpeed's engine."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from cald_framework.engine.zero_step import drop_empty_groups, zero_backward, zero_update


class _Engine:
    """Records what the engine asks of DeepSpeed; ``applied`` and ``norm`` are its answers."""

    def __init__(self, applied: bool = True, norm: float = 2.5):
        self.calls: list[tuple[str, Any]] = []
        self.applied, self.norm = applied, norm

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.calls.append(("boundary", is_boundary))

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        self.calls.append(("backward", (loss.item(), scale_wrt_gas)))
        loss.backward()

    def step(self) -> None:
        self.calls.append(("step", None))

    def was_step_applied(self) -> bool:
        return self.applied

    def get_global_grad_norm(self) -> float:
        return self.norm


def test_each_micro_batch_is_back_propagated_as_divided_with_the_boundary_on_the_last() -> None:
    engine, weight = _Engine(), torch.ones(2, requires_grad=True)
    for index in range(2):
        zero_backward(engine, (weight * 3).sum() / 2, last=index == 1)
    assert engine.calls == [
        ("boundary", False), ("backward", (3.0, False)), ("boundary", True), ("backward", (3.0, False)),
    ]
    assert torch.equal(weight.grad, torch.full((2,), 3.0))


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_loss_reaches_deepspeed_as_non_finite_gradients(bad: float) -> None:
    """A non-finite loss need not give non-finite gradients (here it does not depend on the
    weight); the engine makes sure DeepSpeed's norm check sees it."""
    engine, weight = _Engine(), torch.ones(2, requires_grad=True)
    zero_backward(engine, weight.sum() + bad, last=True)
    assert weight.grad is not None and torch.isnan(weight.grad).all()


def test_the_update_reports_deepspeeds_decision_and_the_norm_only_when_clipping() -> None:
    engine = _Engine(applied=False, norm=math.inf)
    applied, norm = zero_update(engine, 1.0)
    assert engine.calls == [("step", None)] and not applied and norm is not None and math.isinf(norm.item())
    assert zero_update(_Engine(), None) == (True, None)
    assert zero_update(_Engine(norm=2.5), 1.0)[1].item() == 2.5


def test_empty_optimizer_groups_go_before_the_schedule_is_built() -> None:
    kept = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.AdamW([{"params": []}, {"params": [kept], "lr": 0.5}, {"params": []}], lr=1.0)
    drop_empty_groups(optimizer)
    assert [(group["params"], group["lr"]) for group in optimizer.param_groups] == [([kept], 0.5)]
